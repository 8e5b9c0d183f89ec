"""What float logits change on qzoo's own int8 models: every figure of the float-logits table in
docs/quantization.md comes from here.

    python tools/float_logits.py --cifar10 cifar10-jpeg.tar.gz --imagenet imagenet-sample-1k.tar.gz

Each published int8 folder is evaluated as it is (logits rounded to the output layer's 8-bit grid)
and with :func:`qzoo.float_logits` applied to the same int8 weights: top-1, images tied at the top,
and how many images change their top-1. CIFAR-10 models on the whole test split; EfficientNet-Lite on
the 500 odd-class ImageNet photographs that calibration never saw. Then the batch-1 latency of both,
interleaved, 1 thread, at each model's own input size.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import torch

import qzoo
from qzoo import train, workflow
from qzoo.benchmark import interleaved_latency_ms, torch_threads
from qzoo.data import ImageTensors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalogue import ROOT, cpu_name, replace_between

DOC = ROOT / "docs" / "quantization.md"
RESULTS = ROOT / "results" / "float-logits.json"
MARKERS = ("<!-- float-logits:start -->", "<!-- float-logits:end -->")
CIFAR10 = ["mobilenet_v2.cifar10_int8_ptq", "mobilenet_v2.cifar10_int8_qat", "resnet18.cifar10_int8_ptq",
           "resnet18.cifar10_int8_qat"]
IMAGENET = ["efficientnet_lite0.imagenet1k_int8_ptq", "efficientnet_lite1.imagenet1k_int8_ptq",
            "efficientnet_lite2.imagenet1k_int8_ptq"]


def _odd_classes(images: ImageTensors) -> ImageTensors:
    keep = images.labels % 2 == 1
    return ImageTensors(images.images[keep], images.labels[keep], images.classes, images.names)


def _top1(model: torch.nn.Module, images: ImageTensors, transforms: Any) -> tuple[dict[str, Any], torch.Tensor]:
    """``model``'s metrics on ``images`` and each image's top-1, from one pass (the logits are scored as they are)."""
    with torch.inference_mode():
        scored = [(model(x), labels) for x, labels in images.batches(100, mean=transforms.mean, std=transforms.std)]
    logits = torch.cat([batch for batch, _ in scored])
    return train.evaluate(torch.nn.Identity(), scored, progress=False), train.top_classes(logits, 1)[:, 0]


def measure(entry: str, data: str, odd_only: bool, repeats: int) -> dict[str, Any]:
    """One entry as published and with float logits: metrics, changed top-1, batch-1 latency (1 thread)."""
    loaded = workflow.load_model(entry, progress=False)
    images = workflow.load_images(data, "test", loaded.transforms, loaded.categories, progress=False)
    images = _odd_classes(images) if odd_only else images
    rounded = loaded.model
    logits = qzoo.float_logits(copy.deepcopy(rounded))
    (plain, plain_top1), (unrounded, float_top1) = (_top1(m, images, loaded.transforms) for m in (rounded, logits))
    x = qzoo.synthetic_images(1, loaded.transforms.crop_size, seed=5)
    with torch_threads(1), torch.inference_mode():
        latency = interleaved_latency_ms({"rounded": rounded, "float logits": logits}, x, repeats=repeats)
    return {"entry": entry, "layer": qzoo.model_record(logits).float_logits, "images": plain["images"],
            "rounded": plain, "float_logits": unrounded, "changed": int((plain_top1 != float_top1).sum()),
            "latency_ms": latency}


def table(results: dict[str, Any]) -> str:
    """The docs table of a results file (its machine, date and torch, not this run's)."""
    lines = [f"Measured {results['date']} on {results['machine']}, torch {results['torch']}: `{results['command']}` "
             "(CIFAR-10: the 10,000 test images; ImageNet: the 500 odd-class photographs)", "",
             "| int8 entry | images | top-1 rounded (tied) | top-1 float logits (tied) | top-1 changed | "
             "batch 1, 1 thread: rounded / float logits |", "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        rounded, unrounded, ms = row["rounded"], row["float_logits"], row["latency_ms"]
        lines.append(f"| {row['entry']} | {row['images']:,} | {rounded['acc1']:.2f} % ({rounded['ties']}) | "
                     f"{unrounded['acc1']:.2f} % ({unrounded['ties']}) | {row['changed']} | "
                     f"{ms['rounded']:.2f} / {ms['float logits']:.2f} ms ({ms['float logits'] / ms['rounded']:.2f}x) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar10", help="CIFAR-10 as an ImageFolder archive with train/ and test/")
    parser.add_argument("--imagenet", help="the ImageNet sample (one photograph per class)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rows = [measure(entry, args.cifar10, False, args.repeats) for entry in CIFAR10 if args.cifar10]
    rows += [measure(entry, args.imagenet, True, args.repeats) for entry in IMAGENET if args.imagenet]
    command = "python tools/float_logits.py" + "".join(
        f" --{flag} {Path(value).name}" for flag, value in (("cifar10", args.cifar10), ("imagenet", args.imagenet))
        if value)
    results = {"command": command, "machine": cpu_name(), "torch": torch.__version__,
               "date": datetime.date.today().isoformat(), "rows": rows}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    DOC.write_text(replace_between(DOC.read_text(), MARKERS, text))
    print(text)


if __name__ == "__main__":
    main()
