"""The accuracy toolkit measured on EfficientNet-Lite with ImageNet photographs; every figure in
docs/accuracy-toolkit.md comes from here.

    python tools/accuracy_lite.py --data imagenet-sample-1k.tar.gz                      # Lite0
    python tools/accuracy_lite.py --data imagenet-sample-1k.tar.gz --models efficientnet_lite0,efficientnet_lite1

Per model, with tools/imagenet_lite.py's split and preprocessing (calibration on 500 images of even
class indices, evaluation on the 500 of odd ones):

1. PTQ baselines (x86): per-channel and per-tensor weights, held-out top-1 of float and int8 and
   top-1 agreement with float;
2. the sensitivity report (``qzoo.sensitivity``) of the per-channel model on 64 held-out images
   (batches of 8, 2 threads), timed, with its chart in docs/images/;
3. the curve: held-out top-1 and agreement of real int8 models keeping the report's k most
   sensitive layers float (``float_layers=``), k in 0, 1, 2, 4, 8;
4. the PTQ methods: each weight scheme with bias correction (64 calibration images), and with
   cross-layer equalization and high-bias absorption before it.

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
from _catalogue import ROOT, cpu_name, replace_between
from imagenet_lite import batches, logits, transforms_of

RESULTS = ROOT / "results" / "accuracy-lite.json"
DOC = ROOT / "docs" / "accuracy-toolkit.md"
CHARTS = ROOT / "docs" / "images"
BASELINE_MARKERS = ("<!-- toolkit-baselines:start -->", "<!-- toolkit-baselines:end -->")
SENSITIVITY_MARKERS = ("<!-- toolkit-sensitivity:start -->", "<!-- toolkit-sensitivity:end -->")
WEIGHTS = ("per_channel", "per_tensor")
SENSITIVITY_IMAGES, SENSITIVITY_BATCH = 64, 8
CURVE = (0, 1, 2, 4, 8)
CURVE_MARKERS = ("<!-- toolkit-curve:start -->", "<!-- toolkit-curve:end -->")
METHODS_MARKERS = ("<!-- toolkit-methods:start -->", "<!-- toolkit-methods:end -->")
METHODS = {"bias correction": {"bias_correction": True},
           "equalization + bias correction": {"equalize": True, "bias_correction": True}}


def measure(name: str, data: str, calib_images: int, recorded: dict[str, Any] | None = None,
            only: str | None = None) -> dict[str, Any]:
    """One model's row; with ``recorded`` (its row from results/), only the part ``only`` names
    (``curve``: from the recorded sensitivity report, or ``methods``) is measured again."""
    transforms = transforms_of(name)
    images = ImageTensors.from_folder(data_root(data, "val"), transforms.crop_size, resize=transforms.resize_size,
                                      interpolation=transforms.interpolation)
    even = images.subset(torch.nonzero(images.labels % 2 == 0).flatten())
    odd = images.subset(torch.nonzero(images.labels % 2 == 1).flatten())
    calibration = even.balanced_sample(min(calib_images, len(even)), seed=0)
    float_model = qzoo.get_model(name, weights="DEFAULT").eval()
    reference = logits(float_model, odd, transforms)
    row: dict[str, Any] = recorded or {"calibration_images": len(calibration), "held_out_images": len(odd),
                                       "float_top1": train.evaluate(float_model, batches(odd, transforms))["acc1"]}
    def held_out(**kwargs: Any) -> dict[str, float]:
        int8 = qzoo.quantize(float_model, batches(calibration, transforms, 25), progress=False, **kwargs)
        outputs = logits(int8, odd, transforms)
        return {"int8_top1": float((outputs.argmax(1) == odd.labels).float().mean()) * 100,
                "agreement": float((outputs.argmax(1) == reference.argmax(1)).float().mean()) * 100}

    if recorded is not None:
        return {**row, only: _curve(row, held_out) if only == "curve" else _methods(held_out)}
    for weights in WEIGHTS:
        row[weights] = held_out(qconfig=qzoo.get_qconfig("x86", weights=weights))
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
    row["curve"] = _curve(row, held_out)
    row["methods"] = _methods(held_out)
    return row


def _methods(held_out: Any) -> dict[str, dict[str, Any]]:
    """Held-out top-1 and agreement per weight scheme and PTQ method (:data:`METHODS`), with the wall time
    of the whole quantization (calibration included)."""
    measured: dict[str, dict[str, Any]] = {}
    for weights in WEIGHTS:
        for method, options in METHODS.items():
            started = time.perf_counter()
            result = held_out(qconfig=qzoo.get_qconfig("x86", weights=weights), **options)
            measured.setdefault(weights, {})[method] = {**result, "seconds": time.perf_counter() - started}
    return measured


def _curve(row: dict[str, Any], held_out: Any) -> list[dict[str, Any]]:
    """Held-out top-1 and agreement keeping the report's k most sensitive layers float, k in :data:`CURVE`."""
    points = []
    for k in CURVE:
        kept = sensitivity.most_sensitive(row["sensitivity"], k, can_stay_float=True)
        points.append({"float_layers": kept, **(row["per_channel"] if k == 0 else held_out(float_layers=kept))})
    return points


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
    curve = [stamp, "", "| model | float layers kept (most sensitive first) | held-out int8 top-1 (float) | "
             "agreement with float |", "|---|---|---|---|"]
    for name, row in rows.items():
        curve += [f"| {name} | {len(point['float_layers'])}: {', '.join(point['float_layers']) or 'none'} | "
                  f"{point['int8_top1']:.1f} % ({row['float_top1']:.1f} %) | {point['agreement']:.1f} % |"
                  for point in row["curve"]]
    methods = [stamp, "", "| model | weights | plain PTQ top-1 / agreement | "
               + " | ".join(f"{method} top-1 / agreement" for method in METHODS) + " |",
               "|---|---|---|" + "---|" * len(METHODS)]
    for name, row in rows.items():
        if "methods" not in row:
            continue
        for weights in WEIGHTS:
            cells = [row[weights], *(row["methods"][weights][method] for method in METHODS)]
            methods.append(f"| {name} | {weights.replace('_', '-')} | " + " | ".join(
                f"{cell['int8_top1']:.1f} % ({cell['int8_top1'] - row['float_top1']:+.1f}) / {cell['agreement']:.1f} %"
                for cell in cells) + " |")
    text = replace_between(DOC.read_text(), BASELINE_MARKERS, "\n".join(baselines))
    text = replace_between(text, METHODS_MARKERS, "\n".join(methods))
    text = replace_between(text, SENSITIVITY_MARKERS, "\n".join(reports).rstrip())
    DOC.write_text(replace_between(text, CURVE_MARKERS, "\n".join(curve)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="ImageFolder by WordNet id (or a .tar.gz of one)")
    parser.add_argument("--models", default="efficientnet_lite0", help="comma-separated EfficientNet-Lite names")
    parser.add_argument("--calib-images", type=int, default=500)
    parser.add_argument("--only", choices=("curve", "methods"),
                        help="measure only the float-layers curve (from the sensitivity reports in results/) or "
                             "the PTQ methods again, keeping the rest of results/")
    args = parser.parse_args()
    command = "python tools/accuracy_lite.py --data imagenet-sample-1k.tar.gz" + (
        f" --models {args.models}" if args.models != "efficientnet_lite0" else "")
    recorded = json.loads(RESULTS.read_text())["models"] if args.only else {}
    rows = {name: measure(name, args.data, args.calib_images, recorded.get(name), args.only)
            for name in args.models.split(",")}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"date": datetime.date.today().isoformat(), "machine": cpu_name(),
                                   "torch": torch.__version__, "command": command, "models": rows}, indent=1) + "\n")
    write_doc(rows, command)
    print(json.dumps({name: {k: v for k, v in row.items() if k != "sensitivity"} for name, row in rows.items()}))


if __name__ == "__main__":
    main()
