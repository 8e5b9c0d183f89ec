"""The accuracy toolkit measured on EfficientNet-Lite with ImageNet photographs; every figure in
docs/accuracy-toolkit.md comes from here.

    python tools/accuracy_lite.py --data imagenet-sample-1k.tar.gz                      # Lite0
    python tools/accuracy_lite.py --data imagenet-sample-1k.tar.gz --models efficientnet_lite0,efficientnet_lite1

Per model, with tools/imagenet_lite.py's split and preprocessing (calibration on 500 images of even
class indices, evaluation on the 500 of odd ones):

1. PTQ baselines (x86): per-channel and per-tensor weights, held-out top-1 of float and int8 and
   top-1 agreement with float;
2. the sensitivity report (``qzoo.sensitivity``) of the per-channel model on 64 held-out images
   (batches of 8, 2 threads), timed, with its chart in docs/images/.

Writes results/accuracy-lite.json and the tables between the markers in docs/accuracy-toolkit.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

import qzoo
from qzoo import sensitivity, train
from qzoo.data import ImageTensors
from qzoo.workflow import data_root

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalogue import ROOT, cpu_name
from imagenet_lite import batches, logits, transforms_of

RESULTS = ROOT / "results" / "accuracy-lite.json"
DOC = ROOT / "docs" / "accuracy-toolkit.md"
CHARTS = ROOT / "docs" / "images"
BASELINE_MARKERS = ("<!-- toolkit-baselines:start -->", "<!-- toolkit-baselines:end -->")
SENSITIVITY_MARKERS = ("<!-- toolkit-sensitivity:start -->", "<!-- toolkit-sensitivity:end -->")
WEIGHTS = ("per_channel", "per_tensor")
SENSITIVITY_IMAGES, SENSITIVITY_BATCH = 64, 8


def measure(name: str, data: str, calib_images: int) -> dict[str, Any]:
    transforms = transforms_of(name)
    images = ImageTensors.from_folder(data_root(data, "val"), transforms.crop_size, resize=transforms.resize_size,
                                      interpolation=transforms.interpolation)
    even = images.subset(torch.nonzero(images.labels % 2 == 0).flatten())
    odd = images.subset(torch.nonzero(images.labels % 2 == 1).flatten())
    calibration = even.balanced_sample(min(calib_images, len(even)), seed=0)
    float_model = qzoo.get_model(name, weights="DEFAULT").eval()
    reference = logits(float_model, odd, transforms)
    row: dict[str, Any] = {"calibration_images": len(calibration), "held_out_images": len(odd),
                           "float_top1": train.evaluate(float_model, batches(odd, transforms))["acc1"]}
    for weights in WEIGHTS:
        qconfig = qzoo.get_qconfig("x86", weights=weights)
        int8 = qzoo.quantize(float_model, batches(calibration, transforms, 25), qconfig=qconfig, progress=False)
        outputs = logits(int8, odd, transforms)
        row[weights] = {"int8_top1": float((outputs.argmax(1) == odd.labels).float().mean()) * 100,
                        "agreement": float((outputs.argmax(1) == reference.argmax(1)).float().mean()) * 100}
    prepared = qzoo.calibrate(qzoo.prepare_ptq(qzoo.get_model(name, weights="DEFAULT").eval(), "x86"),
                              batches(calibration, transforms, 25), progress=False)
    sample = odd.balanced_sample(SENSITIVITY_IMAGES, seed=0)
    threads = torch.get_num_threads()
    started = time.perf_counter()
    report = sensitivity.sensitivity(prepared, batches(sample, transforms, SENSITIVITY_BATCH), progress=False)
    row["sensitivity"] = {**report, "wall_seconds": time.perf_counter() - started, "threads": threads,
                          "crop": transforms.crop_size}
    CHARTS.mkdir(parents=True, exist_ok=True)
    sensitivity.plot(report, CHARTS / f"{name}-sensitivity.png")
    return row


def _replace(text: str, markers: tuple[str, str], body: str) -> str:
    head, rest = text.split(markers[0], 1)
    return head + markers[0] + "\n" + body + "\n" + markers[1] + rest.split(markers[1], 1)[1]


def write_doc(rows: dict[str, dict[str, Any]], command: str) -> None:
    stamp = (f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, torch {torch.__version__}: "
             f"`{command}`")
    baselines = [stamp, "", "| model | float top-1 | per-channel int8 top-1 (drop) / agreement | "
                 "per-tensor int8 top-1 (drop) / agreement |", "|---|---|---|---|"]
    for name, row in rows.items():
        cells = [f"{row[w]['int8_top1']:.1f} % ({row[w]['int8_top1'] - row['float_top1']:+.1f}) / "
                 f"{row[w]['agreement']:.1f} %" for w in WEIGHTS]
        baselines.append(f"| {name} | {row['float_top1']:.1f} % | {cells[0]} | {cells[1]} |")
    reports = [stamp, ""]
    for name, row in rows.items():
        report = row["sensitivity"]
        reports += [f"**{name}** ({report['crop']}x{report['crop']}, {report['images']} images, "
                    f"{len(report['layers'])} layers, {report['wall_seconds']:.0f} s with {report['threads']} "
                    f"threads; [chart](images/{name}-sensitivity.png)):", "",
                    sensitivity.format_table(report, 10), ""]
    text = _replace(DOC.read_text(), BASELINE_MARKERS, "\n".join(baselines))
    DOC.write_text(_replace(text, SENSITIVITY_MARKERS, "\n".join(reports).rstrip()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="ImageFolder by WordNet id (or a .tar.gz of one)")
    parser.add_argument("--models", default="efficientnet_lite0", help="comma-separated EfficientNet-Lite names")
    parser.add_argument("--calib-images", type=int, default=500)
    args = parser.parse_args()
    command = "python tools/accuracy_lite.py --data imagenet-sample-1k.tar.gz" + (
        f" --models {args.models}" if args.models != "efficientnet_lite0" else "")
    rows = {name: measure(name, args.data, args.calib_images) for name in args.models.split(",")}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"date": datetime.date.today().isoformat(), "machine": cpu_name(),
                                   "torch": torch.__version__, "command": command, "models": rows}, indent=1) + "\n")
    write_doc(rows, command)
    print(json.dumps({name: {k: v for k, v in row.items() if k != "sensitivity"} for name, row in rows.items()}))


if __name__ == "__main__":
    main()
