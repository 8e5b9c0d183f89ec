"""The PT2E flow side by side with eager int8 and ONNX Runtime: every figure of docs/pt2e.md comes from here.

    pip install -e ".[pt2e,onnx,lite]"
    python tools/pt2e.py --cifar10 ../shared/datasets/cifar10/cifar10-jpeg.tar.gz \\
        --imagenet ../shared/datasets/imagenet-sample/imagenet-sample-1k.tar.gz     # all of it (~25 min, 2 cores)
    python tools/pt2e.py --sections latency --models resnet18 --repeats 5        # a quick look

Sections (``--sections``, default all):

- ``accuracy``: the shipped CIFAR-10 MobileNetV2 calibrated on 512 seeded training images and
  evaluated on the 10,000 test images; EfficientNet-Lite0 (ImageNet weights) calibrated on the
  sample's even-class images, evaluated on its 500 odd-class ones. float, eager int8, the eager
  int8 model on ONNX Runtime, PT2E int8 (compiled), from the same calibration images.
- ``latency``: per model at 224x224 (random weights: speed does not depend on them), batch 1 and
  16, 1 and 2 threads, interleaved: eager int8, qzoo's TorchScript path, ``torch.compile`` of the
  eager int8 model (a TorchScript-free candidate), qzoo's int8 on ONNX Runtime, PT2E int8. Fresh
  models per cell (oneDNN caches kernels per shape).
- ``freezing``: why PT2E can be slow: resnet18, batch 1, 1 thread, PT2E compiled with and
  without inductor's freezing, beside inductor fp32 and eager int8; once on this CPU and once in
  a child process with oneDNN and ATen capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2
  ATEN_CPU_CAPABILITY=avx2``), the ISA of a CPU without VNNI.
- ``families``: each family's smallest member (64x64, 75 for Inception v3, BatchNorm-refreshed
  random weights): capture and convert, compile time, the compiled model's relative error against
  its own converted graph, and both int8 models' error against float.

Writes ``results/pt2e.json`` and the tables of ``docs/pt2e.md`` between the ``pt2e-*`` markers.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import qzoo
from qzoo import workflow
from qzoo.benchmark import interleaved_latency_ms, torch_threads
from qzoo.data import ImageTensors, synthetic_images

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalogue import ROOT, cpu_name, int8_isa, replace_between

sys.path.insert(0, str(ROOT / "tests"))
from helpers import HEAVY, fresh_model, images, input_size, relative_error  # noqa: E402

RESULTS = ROOT / "results" / "pt2e.json"
DOC = ROOT / "docs" / "pt2e.md"
SECTIONS = ("accuracy", "latency", "freezing", "families")
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def _top1(model: Callable[[Tensor], Tensor], batches: Any) -> tuple[float, Tensor]:
    """Top-1 (percent) and predictions of ``model`` over ``(images, labels)`` batches."""
    predicted, labels = [], []
    with torch.inference_mode():
        for x, y in batches:
            predicted.append(model(x).argmax(1))
            labels.append(y)
    hits = torch.cat(predicted) == torch.cat(labels)
    return round(hits.double().mean().item() * 100, 2), torch.cat(predicted)


def _accuracy_row(label: str, float_model: nn.Module, calibration: list, test: Callable[[], Any]) -> dict[str, Any]:
    """float, eager int8 (torch and ORT) and PT2E int8 top-1 from the same calibration batches."""
    eager = qzoo.quantize(float_model, calibration, progress=False)
    variants = {"float": float_model, "eager int8": eager,
                "eager int8 on ORT": qzoo.optimize_for_inference(eager, calibration[0][0][:2], runtime="onnxruntime"),
                "pt2e int8": qzoo.quantize(float_model, calibration, flow="pt2e", progress=False)}
    row: dict[str, Any] = {"model": label, "calibration_images": sum(len(x) for x, _ in calibration)}
    predictions = {}
    for name, model in variants.items():
        with qzoo.quantized_engine("x86"):
            row[name], predictions[name] = _top1(model, test())
    row["test_images"] = len(predictions["float"])
    row["pt2e agreement with eager int8"] = round(
        (predictions["pt2e int8"] == predictions["eager int8"]).double().mean().item() * 100, 2)
    print(json.dumps(row), flush=True)
    return row


def accuracy(cifar10: str | None, imagenet: str | None) -> list[dict[str, Any]]:
    rows = []
    if cifar10:
        loaded = workflow.load_model("mobilenet_v2.cifar10_float", progress=False)
        t = loaded.transforms
        sample = workflow.load_images(cifar10, "train", t, loaded.categories, progress=False, sample=512, seed=0)
        test = workflow.load_images(cifar10, "test", t, loaded.categories, progress=False)
        rows.append(_accuracy_row("mobilenet_v2.cifar10_float (CIFAR-10 test, 10,000)", loaded.model.eval(),
                                  list(sample.batches(32, mean=t.mean, std=t.std)),
                                  lambda: test.batches(500, mean=t.mean, std=t.std)))
    if imagenet:
        from imagenet_lite import transforms_of

        t = transforms_of("efficientnet_lite0")
        photos = ImageTensors.from_folder(workflow.data_root(imagenet, "val"), t.crop_size, resize=t.resize_size,
                                          interpolation=t.interpolation)
        even = photos.subset(torch.nonzero(photos.labels % 2 == 0).flatten())
        odd = photos.subset(torch.nonzero(photos.labels % 2 == 1).flatten())
        rows.append(_accuracy_row("efficientnet_lite0 (ImageNet sample, 500 odd-class)",
                                  qzoo.efficientnet_lite0(weights="DEFAULT").eval(),
                                  list(even.batches(25, mean=t.mean, std=t.std)),
                                  lambda: odd.batches(50, mean=t.mean, std=t.std)))
    return rows


def _runners(name: str, threads: int, batch: int) -> dict[str, Callable[[Tensor], Tensor]]:
    """Fresh int8 models of ``name`` for one latency cell, calibrated on the same 32 synthetic images and first
    called at the cell's batch size (torch's x86 engine keeps its fast oneDNN path for the first input shape and
    thread count a packed conv weight sees: docs/benchmarks.md)."""
    torch.manual_seed(0)
    model = qzoo.get_model(name).eval()
    calibration = synthetic_images(32, 224, seed=1).split(16)
    eager = qzoo.quantize(model, calibration, progress=False)
    example = synthetic_images(batch, 224, seed=3)
    return {"eager int8": eager, "qzoo TorchScript int8": qzoo.optimize_for_inference(eager, example),
            "torch.compile(eager int8)": torch.compile(eager),
            "qzoo int8 on ORT": qzoo.optimize_for_inference(eager, example, runtime="onnxruntime", threads=threads),
            "PT2E int8 (inductor)": qzoo.quantize(model, calibration, flow="pt2e", progress=False)}


def latency(models: list[str], batches: list[int], threads_list: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        for threads in threads_list:
            with torch_threads(threads):
                for batch in batches:
                    torch._dynamo.reset()  # inductor's kernels are built for the thread count they compile under
                    runners = _runners(name, threads, batch)
                    with qzoo.quantized_engine("x86"):
                        ms = interleaved_latency_ms(runners, synthetic_images(batch, 224, seed=5), repeats=repeats)
                    rows.append({"model": name, "batch": batch, "threads": threads,
                                 **{k: round(v, 2) for k, v in ms.items()}})
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def freezing_here(repeats: int) -> dict[str, float]:
    """resnet18 at batch 1, 1 thread: PT2E int8 compiled with and without freezing, inductor fp32, eager int8."""
    import torch._inductor.config as inductor_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = qzoo.get_model("resnet18").eval()
    calibration = synthetic_images(32, 224, seed=1).split(16)
    int8 = qzoo.quantize(model, calibration, flow="pt2e", progress=False)
    x = synthetic_images(1, 224, seed=5)
    runners: dict[str, Callable[[Tensor], Tensor]] = {
        "eager int8": qzoo.quantize(model, calibration, progress=False), "PT2E int8, freezing": int8,
        "PT2E int8, no freezing": torch.compile(int8.graph), "inductor fp32, no freezing": torch.compile(model)}
    with torch.no_grad():
        for name in ("PT2E int8, no freezing", "inductor fp32, no freezing"):
            runners[name](x)  # compiled now, while freezing is off
        with inductor_config.patch(freezing=True):
            runners["inductor fp32, freezing"] = torch.compile(qzoo.get_model("resnet18").eval())
            runners["inductor fp32, freezing"](x)
        with qzoo.quantized_engine("x86"):
            return {k: round(v, 2) for k, v in interleaved_latency_ms(runners, x, repeats=repeats).items()}


def freezing(repeats: int) -> dict[str, dict[str, float]]:
    """:func:`freezing_here` on this CPU and in a child capped at AVX2 (oneDNN and ATen)."""
    here = freezing_here(repeats)
    child = subprocess.run([sys.executable, __file__, "--freezing-child", "--repeats", str(repeats)],
                           env={**os.environ, **AVX2}, capture_output=True, text=True, check=True)
    capped = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps({"native": here, "avx2": capped}), flush=True)
    return {"native": here, "avx2": capped}


def families() -> list[dict[str, Any]]:
    rows = []
    for name in HEAVY:
        torch._dynamo.reset()
        model, size = fresh_model(name), input_size(name)
        calibration, x = images(16, seed=1, size=size).split(8), images(6, seed=5, size=size)
        row: dict[str, Any] = {"model": name, "image_size": size}
        try:
            start = time.perf_counter()
            int8 = qzoo.quantize(model, calibration, flow="pt2e", progress=False)
            row["capture_convert_s"] = round(time.perf_counter() - start, 1)
            start = time.perf_counter()
            compiled = int8(x)
            row["compile_s"] = round(time.perf_counter() - start, 1)
            eager = qzoo.quantize(model, calibration, progress=False)
            with torch.no_grad(), qzoo.quantized_engine("x86"):
                expected, graph, eager_out = model(x), int8.graph(x), eager(x)
            row.update({"compiled vs its graph": round(relative_error(compiled, graph), 4),
                        "pt2e graph vs float": round(relative_error(graph, expected), 4),
                        "eager int8 vs float": round(relative_error(eager_out, expected), 4)})
        except Exception as error:  # a family that fails is reported with its error, the others still run
            row["error"] = f"{type(error).__name__}: {re.split(r'[,;]', str(error).splitlines()[0])[0]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _header(meta: dict[str, Any]) -> str:
    return (f"Measured {meta['date']} on {meta['cpu']} ({meta['isa']}; {meta['cores']} cores), torch {meta['torch']}, "
            f"torchao {meta['torchao']}: `{meta['command']}`")


def write_doc(report: dict[str, Any]) -> None:
    """The tables of docs/pt2e.md, each under a line saying when, where and by which command it was measured."""
    text = DOC.read_text()
    if "accuracy" in report:
        header = _header(report["accuracy"]["meta"])
        columns = ["model", "calibration_images", "test_images", "float", "eager int8", "eager int8 on ORT",
                   "pt2e int8", "pt2e agreement with eager int8"]
        text = replace_between(text, ("<!-- pt2e-accuracy:start -->", "<!-- pt2e-accuracy:end -->"),
                               header + " (top-1 %)\n\n" + _table(report["accuracy"]["rows"], columns))
    if "latency" in report:
        header = _header(report["latency"]["meta"])
        columns = ["model", "batch", "threads", "eager int8", "qzoo TorchScript int8", "torch.compile(eager int8)",
                   "qzoo int8 on ORT", "PT2E int8 (inductor)"]
        text = replace_between(text, ("<!-- pt2e-latency:start -->", "<!-- pt2e-latency:end -->"),
                               header + " (ms per batch, median of interleaved calls)\n\n"
                               + _table(report["latency"]["rows"], columns))
    if "freezing" in report:
        header = _header(report["freezing"]["meta"])
        measured = report["freezing"]["rows"]
        rows = [{"CPU ISA": "this CPU", **measured["native"]}, {"CPU ISA": "capped at AVX2", **measured["avx2"]}]
        columns = ["CPU ISA", *measured["native"]]
        text = replace_between(text, ("<!-- pt2e-freezing:start -->", "<!-- pt2e-freezing:end -->"),
                               header + " (resnet18, 224x224, batch 1, 1 thread, ms)\n\n" + _table(rows, columns))
    if "families" in report:
        header = _header(report["families"]["meta"])
        columns = ["model", "image_size", "capture_convert_s", "compile_s", "compiled vs its graph",
                   "pt2e graph vs float", "eager int8 vs float", "error"]
        text = replace_between(text, ("<!-- pt2e-families:start -->", "<!-- pt2e-families:end -->"),
                               header + " (relative errors on BatchNorm-refreshed random weights)\n\n"
                               + _table(report["families"]["rows"], columns))
    DOC.write_text(text)


def _named(arguments: list[str]) -> list[str]:
    """The command's arguments with data paths cut to their file names (docs never name folders outside the repo)."""
    return [Path(a).name if os.sep in a and Path(a).exists() else a for a in arguments]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--cifar10", help="CIFAR-10 ImageFolder or .tar.gz (train/ and test/) for the accuracy rows")
    parser.add_argument("--imagenet", help="the ImageNet sample (.tar.gz or folder) for the Lite0 accuracy row")
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"], help="latency models")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-docs", action="store_true", help="print and save results/pt2e.json only")
    parser.add_argument("--freezing-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.freezing_child:
        print(json.dumps(freezing_here(args.repeats)))
        return
    meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cores": os.cpu_count(), "isa": int8_isa(),
            "torch": torch.__version__, "torchao": importlib.metadata.version("torchao"),
            "command": "python tools/pt2e.py " + " ".join(_named(sys.argv[1:]))}
    measure = {"accuracy": lambda: accuracy(args.cifar10, args.imagenet),
               "latency": lambda: latency(args.models, args.batches, args.threads, args.repeats),
               "freezing": lambda: freezing(args.repeats), "families": families}
    if not (args.cifar10 or args.imagenet):
        del measure["accuracy"]
    # sections measured before and not now are kept, each with the line that says how it was measured
    report: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for section in args.sections:
        if section in measure:
            report[section] = {"meta": meta, "rows": measure[section]()}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_docs:
        write_doc(report)


if __name__ == "__main__":
    main()
