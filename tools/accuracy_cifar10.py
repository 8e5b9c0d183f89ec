"""The PTQ methods on the shipped CIFAR-10 MobileNetV2: every figure in the CIFAR-10 table of
docs/accuracy-toolkit.md comes from here.

    python tools/accuracy_cifar10.py

Calibrates on the 500 training images of the embedded sample and evaluates on its 2,000 test
images, per backend (x86, qnnpack) and weight scheme (per-channel, per-tensor): plain PTQ, with
bias correction, and with cross-layer equalization, high-bias absorption and bias correction.
Not where the toolkit proves itself (a small network whose int8 already matches float); reported,
not tuned to.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import torch

import qzoo
from qzoo import train, workflow
from qzoo.demo import SAMPLE_ARCHIVE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalogue import ROOT, cpu_name, replace_between

DOC = ROOT / "docs" / "accuracy-toolkit.md"
MARKERS = ("<!-- toolkit-cifar10:start -->", "<!-- toolkit-cifar10:end -->")
METHODS = {"plain": {}, "bias correction": {"bias_correction": True},
           "equalization + bias correction": {"equalize": True, "bias_correction": True}}


def measure() -> tuple[float, list[tuple[str, str, list[dict[str, Any]]]]]:
    """Float top-1 and, per (backend, weights), the int8 metrics of each method in :data:`METHODS`."""
    loaded = workflow.load_model("mobilenet_v2.cifar10_float", progress=False)
    transforms = loaded.transforms
    calibration, test = (workflow.load_images(str(SAMPLE_ARCHIVE), split, transforms, loaded.categories,
                                              progress=False) for split in ("train", "test"))

    def batches(images: Any) -> Any:
        return images.batches(100, mean=transforms.mean, std=transforms.std)

    float_top1 = train.evaluate(loaded.model, batches(test), progress=False)["acc1"]
    rows = []
    for backend in ("x86", "qnnpack"):
        for weights in ("per_channel", "per_tensor"):
            cells = []
            for options in METHODS.values():
                int8 = qzoo.quantize(loaded.model, list(batches(calibration)), backend=backend, progress=False,
                                     qconfig=qzoo.get_qconfig(backend, weights=weights), **options)
                with qzoo.quantized_engine(backend):
                    cells.append(train.evaluate(int8, batches(test), progress=False))
            rows.append((backend, weights, cells))
    return float_top1, rows


def main() -> None:
    float_top1, rows = measure()
    lines = [f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, torch {torch.__version__}: "
             "`python tools/accuracy_cifar10.py` (500 calibration, 2,000 test images; float top-1 "
             f"{float_top1:.2f} %)", "",
             "| backend | weights | " + " | ".join(f"{method} top-1" for method in METHODS) + " |",
             "|---|---|" + "---|" * len(METHODS)]
    lines += [f"| {backend} | {weights.replace('_', '-')} | " + " | ".join(
        f"{cell['acc1']:.2f} % ({cell['acc1'] - float_top1:+.2f}; {cell['ties']} tied)" for cell in cells) + " |"
        for backend, weights, cells in rows]
    DOC.write_text(replace_between(DOC.read_text(), MARKERS, "\n".join(lines)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
