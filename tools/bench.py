"""int8 CPU inference side by side: torch eager (fp32, int8 per backend), qzoo's optimized path,
torchvision's quantized model, ONNX Runtime fp32 and int8 (QDQ, per-channel, static), qzoo's int8
model exported to ONNX and run by ONNX Runtime; plus the
int8 GEMM ceiling and the cost of PTQ and QAT. Every figure of docs/benchmarks.md's speed table comes from here.

    python tools/bench.py                          # resnet18, resnet50, mobilenet_v2; batch 1, 16; 1, 2 threads
    python tools/bench.py --models resnet18 --batches 1 --threads 1 --repeats 20
    python tools/bench.py --families               # the smallest member of each other family: its own table
    pip install -e ".[bench]"                      # ONNX Runtime columns (left out, and said so, without it)

Each model runs at its weights' crop size (Inception v3: 299) unless ``--image-size`` is given. Writes
``results/bench.json`` and ``results/bench.md`` and the table in ``docs/benchmarks.md`` between the
``bench-table`` markers (with ``--families``: ``bench-families.*`` and the ``bench-families-table``
markers, a table of its own, measured in its own run). Variants are called round-robin (same noise for all), after warm-up,
with the quiet-machine guard of ``qzoo.benchmark.interleaved_timings``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import qzoo
from qzoo import benchmark, serialization
from qzoo.data import synthetic_images
from qzoo.inference import optimize_for_inference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalogue import DEFAULT_ALLOCATOR, allocator, cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
DOC = ROOT / "docs" / "benchmarks.md"
MARKERS = ("<!-- bench-table:start -->", "<!-- bench-table:end -->")
FAMILY_MARKERS = ("<!-- bench-families-table:start -->", "<!-- bench-families-table:end -->")
IMAGE_SIZE = 224


@functools.cache
def calibration(image_size: int) -> tuple[Tensor, ...]:
    """The 64 synthetic images (4 batches) every int8 variant, ORT's included, is calibrated on."""
    return synthetic_images(64, image_size, seed=1).split(16)
TORCHVISION_QUANTIZABLE = {name.removeprefix("quantized_")
                           for name in torchvision.models.list_models(module=torchvision.models.quantization)}
QZOO_TORCH, QZOO_ORT, ORT_INT8 = "qzoo optimized int8", "qzoo int8 on ORT", "ORT int8 QDQ"
FP32 = "torch fp32"
ORT_FP32_EXPORTER, TORCHSCRIPT_EXPORTER = "torch.export-based", "TorchScript-based"
"""How ORT's fp32 file is exported now, and how it was before a report recorded it (before 2026-11-30)."""
FAMILY_SMALLEST = ["mobilenet_v3_small", "shufflenet_v2_x0_5", "googlenet", "inception_v3", "mnasnet0_5",
                   "regnet_x_400mf", "regnet_y_400mf", "efficientnet_b0"]
"""``--families``: the smallest member of each family the default models do not cover (and RegNetX)."""


def int8_of(model: nn.Module, backend: str, image_size: int) -> nn.Module:
    """PTQ of a copy of ``model`` on the shared calibration batches."""
    return qzoo.quantize(model, calibration(image_size), backend=backend, progress=False)


def torchvision_int8(name: str, float_model: nn.Module, image_size: int) -> nn.Module:
    """torchvision's own quantizable model with the same weights, quantized the same way (x86)."""
    published = qzoo.registry.model_spec(name).published_with
    model = getattr(torchvision.models.quantization, name)(quantize=False, **published).eval()
    model.load_state_dict(float_model.state_dict())
    return int8_of(model, "x86", image_size)


def first_called_copies(int8: dict[str, nn.Module], torchvision_model: nn.Module | None,
                        images: Tensor) -> dict[str, Callable[[Tensor], Tensor]]:
    """Fresh copies of the int8 models for one table cell, whose first call is this cell's batch under its thread
    count: torch's x86 engine keeps its fast path (oneDNN's cached primitive) for the first input shape and thread
    count each packed conv weight sees, so each cell times a model serving that one batch size, as a server does."""
    runners: dict[str, Callable[[Tensor], Tensor]] = {
        f"torch int8 {backend}": copy.deepcopy(model) for backend, model in int8.items()}
    runners[QZOO_TORCH] = optimize_for_inference(copy.deepcopy(int8["x86"]), images)
    if torchvision_model is not None:
        torchvision_copy = copy.deepcopy(torchvision_model)

        def run(batch: Tensor) -> Tensor:
            with qzoo.backend_engine("x86"):
                return torchvision_copy(batch)

        runners["torchvision int8"] = run
    return runners


def onnx_runners(float_model: nn.Module, threads: int, folder: Path,
                 image_size: int) -> tuple[dict[str, Callable], dict[str, int]]:
    """ONNX Runtime fp32 (torch's ``torch.export``-based exporter) and static int8 (ORT's QDQ quantizer, per-channel,
    calibrated on the same batches)."""
    import onnxruntime
    from onnxruntime import quantization as ort_quantization

    fp32_path, int8_path = folder / "fp32.onnx", folder / "int8.onnx"
    if not fp32_path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        exported = torch.onnx.export(float_model, (calibration(image_size)[0][:1],), dynamo=True, verbose=False,
                                     input_names=["x"], output_names=["y"],
                                     dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
        exported.save(str(fp32_path))
        batches = iter([{"x": batch.numpy()} for batch in calibration(image_size)])

        class Reader(ort_quantization.CalibrationDataReader):
            def get_next(self) -> dict[str, Any] | None:
                return next(batches, None)

        ort_quantization.quantize_static(str(fp32_path), str(int8_path), Reader(),
                                         quant_format=ort_quantization.QuantFormat.QDQ, per_channel=True,
                                         activation_type=ort_quantization.QuantType.QUInt8,
                                         weight_type=ort_quantization.QuantType.QInt8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # ORT's pool threads otherwise spin after each run and steal the cores from the next variant
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    runners = {}
    for label, path in (("ORT fp32", fp32_path), ("ORT int8 QDQ", int8_path)):
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        runners[label] = lambda images, session=session: session.run(None, {"x": images.numpy()})
    return runners, {"ORT fp32": fp32_path.stat().st_size, "ORT int8 QDQ": int8_path.stat().st_size}


def file_sizes(name: str, float_model: nn.Module, int8: nn.Module, folder: Path) -> dict[str, int]:
    float_path = serialization.save_state(float_model, folder / f"{name}-fp32.safetensors")
    int8_path = serialization.save_int8(int8, folder / f"{name}-int8.safetensors", architecture=name, kwargs={},
                                        backend="x86")
    return {"fp32": float_path.stat().st_size, "int8": int8_path.stat().st_size}


def gigaops(model: nn.Module, images: Tensor) -> float:
    """Multiply-adds x 2 of one forward pass, in billions (torch's FLOP counter on the float model)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(images)
    return counter.get_total_flops() / 1e9


def _int8_layer(layer: nn.Module, x: Tensor) -> Callable[[Tensor], Tensor]:
    """``layer`` between quant stubs, PTQ'd for x86 on ``x``, as a callable that ignores its argument."""
    model = nn.Sequential(qzoo.quantization.QuantStub(), layer, qzoo.quantization.DeQuantStub()).eval()
    int8 = qzoo.quantize(model, [x], inplace=True, progress=False)

    def run(_: Tensor) -> Tensor:
        with qzoo.backend_engine("x86"):
            return int8(x)

    return run


def gemm_ceiling(threads: int, repeats: int) -> dict[str, float]:
    """Peak GOPS of large int8 GEMMs (x86) and of fp32 ``mm``, timed side by side.

    Two int8 shapes: a 1024^3 quantized Linear and a 1x1 quantized conv (4 x 512 x 56 x 56 input,
    512 filters: M=12544, N=K=512, the GEMM inside a ResNet bottleneck); the ceiling is the faster.
    """
    torch.set_num_threads(threads)
    size = 1024
    x = torch.randn(size, size)
    feature_map = torch.randn(4, 512, 56, 56)
    weight = torch.randn(size, size)
    variants = {"int8_linear": _int8_layer(nn.Linear(size, size), x),
                "int8_conv1x1": _int8_layer(nn.Conv2d(512, 512, 1), feature_map),
                "fp32": lambda _: x @ weight}
    timings = benchmark.interleaved_timings(variants, x, repeats=repeats)
    operations = {"int8_linear": 2 * size ** 3, "int8_conv1x1": 2 * 4 * 56 * 56 * 512 * 512, "fp32": 2 * size ** 3}
    gops = {f"{label}_gops": operations[label] / 1e9 / (t.min_ms / 1e3) for label, t in timings.items()}
    gops["int8_gops"] = max(gops["int8_linear_gops"], gops["int8_conv1x1_gops"])
    return gops


def bench_float_model(name: str, image_size: int) -> nn.Module:
    """``name`` with seeded random weights, BatchNorm statistics refilled from synthetic images, in eval
    mode, as the published weights build it (no auxiliary heads: GoogLeNet, Inception v3)."""
    torch.manual_seed(0)
    float_model = qzoo.get_model(name, **qzoo.registry.model_spec(name).published_with).eval()
    qzoo.refresh_batchnorm(float_model, synthetic_images(32, image_size, seed=0).split(16))
    return float_model.eval()


def bench_model(name: str, batches: list[int], threads_list: list[int], repeats: int, backends: list[str],
                folder: Path, image_size: int | None) -> dict[str, Any]:
    image_size = image_size or qzoo.registry.model_spec(name).input_size[1]
    float_model = bench_float_model(name, image_size)
    int8 = {backend: int8_of(float_model, backend, image_size) for backend in backends}
    torchvision_model = torchvision_int8(name, float_model, image_size) if name in TORCHVISION_QUANTIZABLE else None
    sizes = file_sizes(name, float_model, int8["x86"], folder)
    report: dict[str, Any] = {"sizes_bytes": sizes, "runs": [], "image_size": image_size}
    for threads in threads_list:
        torch.set_num_threads(threads)
        ort: dict[str, Callable] = {}
        try:
            ort, ort_sizes = onnx_runners(float_model, threads, folder / name, image_size)
            sizes.update(ort_sizes)
            on_ort = optimize_for_inference(int8["x86"], calibration(image_size)[0][:2], runtime="onnxruntime",
                                            threads=threads)
            ort[QZOO_ORT] = on_ort
            sizes[QZOO_ORT] = len(on_ort.onnx_model)
        except ImportError as missing:  # onnxruntime, or onnxscript for torch's exporter
            if "onnxruntime" not in report:
                report["onnxruntime"] = f"skipped ({missing}): pip install -e '.[bench]'"
                print(f"{name}: the ONNX Runtime columns are {report['onnxruntime']}", file=sys.stderr)
        for batch in batches:
            images = synthetic_images(batch, image_size, seed=5)
            variants = {"torch fp32": float_model, **first_called_copies(int8, torchvision_model, images), **ort}
            timings = benchmark.interleaved_timings(variants, images, repeats=repeats,
                                                    max_rounds=repeats * 2)
            report["runs"].append({
                "threads": threads, "batch": batch, "gops_per_call": gigaops(float_model, images),
                "timings": {label: vars(t) for label, t in timings.items()},
            })
            print(json.dumps({"model": name, "threads": threads, "batch": batch,
                              **{label: round(t.median_ms, 2) for label, t in timings.items()}}), flush=True)
    return report


def ptq_seconds(threads: int) -> float:
    """PTQ of resnet18 on 512 images of 224x224 (batches of 32): prepare, calibrate, convert."""
    torch.set_num_threads(threads)
    images = synthetic_images(512, IMAGE_SIZE, seed=3).split(32)
    model = qzoo.resnet18().eval()
    start = time.perf_counter()
    qzoo.quantize(model, images, inplace=True, progress=False)
    return time.perf_counter() - start


def training_steps_ms(threads: int, steps: int = 6, batch: int = 16) -> dict[str, float]:
    """Median ms of a float and a QAT training step of resnet18 (batch 16, 224x224), alternated."""
    torch.set_num_threads(threads)
    images, targets = synthetic_images(batch, IMAGE_SIZE, seed=4), torch.arange(batch) % 1000
    models = {"float": qzoo.resnet18().train(), "qat": qzoo.resnet18(prepare="qat")}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for step in range(steps + 1):
        for key, model in models.items():
            start = time.perf_counter()
            loss = nn.functional.cross_entropy(model(images), targets)
            optimizers[key].zero_grad()
            loss.backward()
            optimizers[key].step()
            if step:  # the first step of each is warm-up
                times[key].append((time.perf_counter() - start) * 1e3)
    return {key: statistics.median(values) for key, values in times.items()}


def machine() -> dict[str, Any]:
    cpu = cpu_name()
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__, "qzoo": qzoo.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "versions": versions, "allocator": allocator(),
            "date": datetime.date.today().isoformat()}


def _cell(timings: dict[str, Any], label: str) -> str:
    return f"{timings[label]['median_ms']:.1f}" if label in timings else "—"


def markdown(report: dict[str, Any]) -> str:
    """The docs table: median ms per call, qzoo/ORT int8 ratios, GEMM efficiency, sizes, workflow cost."""
    lines = []
    for threads in report["threads"]:
        ceiling = report["gemm_ceiling"][str(threads)]["int8_gops"]
        labels = report["labels"]
        gemm = report["gemm_ceiling"][str(threads)]
        shapes = (f" (1024^3 Linear {gemm['int8_linear_gops']:.0f}, 1x1 conv {gemm['int8_conv1x1_gops']:.0f})"
                  if "int8_conv1x1_gops" in gemm else "")
        lines += [f"**{threads} thread{'s' if threads > 1 else ''}** (median ms per call; int8 GEMM ceiling "
                  f"{ceiling:.0f} GOPS{shapes}, fp32 `mm` {gemm['fp32_gops']:.0f} GFLOPS)",
                  "",
                  "| model | batch | " + " | ".join(labels) + " | qzoo optimized / ORT int8 | qzoo on ORT / ORT int8 "
                  "| fastest qzoo int8 / torch fp32 | qzoo optimized GOPS (% of ceiling) | rounds kept |",
                  "|---|---|" + "---|" * len(labels) + "---|---|---|---|---|"]
        for name, model in report["models"].items():
            for run in model["runs"]:
                if run["threads"] != threads:
                    continue
                timings = run["timings"]
                ratios = [f"{timings[label]['median_ms'] / timings[ORT_INT8]['median_ms']:.2f}"
                          if label in timings and ORT_INT8 in timings else "—" for label in (QZOO_TORCH, QZOO_ORT)]
                fastest = min(timings[label]["median_ms"] for label in (QZOO_TORCH, QZOO_ORT) if label in timings)
                gops = run["gops_per_call"] / (timings[QZOO_TORCH]["min_ms"] / 1e3)
                kept = next(iter(timings.values()))
                lines.append(f"| {name} | {run['batch']} | " + " | ".join(_cell(timings, label) for label in labels)
                             + f" | {' | '.join(ratios)} | {fastest / timings[FP32]['median_ms']:.2f} | "
                             f"{gops:.0f} ({100 * gops / ceiling:.0f}%) | {kept['kept']}/{kept['rounds']} |")
        lines.append("")
    lines += ["| model | fp32 file | int8 file (qzoo safetensors) | int8 / fp32 | qzoo int8 ONNX file | "
              "ORT int8 QDQ file |",
              "|---|---|---|---|---|---|"]
    for name, model in report["models"].items():
        sizes = model["sizes_bytes"]
        onnx_files = [f"{sizes[label] / 2**20:.1f} MiB" if label in sizes else "—" for label in (QZOO_ORT, ORT_INT8)]
        lines.append(f"| {name} | {sizes['fp32'] / 2**20:.1f} MiB | {sizes['int8'] / 2**20:.1f} MiB | "
                     f"{sizes['int8'] / sizes['fp32']:.3f} | {' | '.join(onnx_files)} |")
    cost = report.get("workflow_cost")
    if cost:
        lines += ["", f"Workflow cost ({cost['threads']} threads): PTQ of resnet18 on 512 images of 224x224 "
                  f"(prepare, calibrate, convert) {cost['ptq_seconds']:.1f} s; a resnet18 training step "
                  f"(batch 16, 224x224) {cost['step_ms']['float']:.0f} ms float vs {cost['step_ms']['qat']:.0f} ms "
                  f"QAT ({cost['step_ms']['qat'] / cost['step_ms']['float']:.2f}x)."]
    lines += ["", f"Measured with `{report['command']}` on {report['machine']['cpu']} ({report['machine']['cores']} "
              f"cores), {', '.join(f'{k} {v}' for k, v in report['machine']['versions'].items())}, "
              f"{report['machine']['date']}; inputs of {_sizes(report)}. Random weights with BatchNorm statistics refilled from synthetic "
              "images (speed does not depend on the values); qzoo and torchvision int8 use the x86 backend; "
              f"ORT fp32 is the float model as torch's {report.get('ort_fp32_exporter', TORCHSCRIPT_EXPORTER)} "
              "ONNX exporter writes it; ORT int8 is ORT's own static QDQ quantization (per-channel) of that file, "
              "calibrated on the same 64 images; qzoo int8 on ORT is qzoo's x86 int8 model exported to ONNX and run "
              "by ORT. Min times give the GOPS. Memory: "
              f"{report['machine'].get('allocator', DEFAULT_ALLOCATOR)} (torch fp32 at batch 16 depends on it: "
              "[the allocator table](#torch-fp32-at-large-batches-glibcs-allocator))."]
    return "\n".join(lines) + "\n"


def _sizes(report: dict[str, Any]) -> str:
    """The input sides used, e.g. ``224x224 (inception_v3: 299x299)``."""
    sizes = {name: model.get("image_size", report.get("image_size") or IMAGE_SIZE)
             for name, model in report["models"].items()}
    common = max(set(sizes.values()), key=list(sizes.values()).count)
    others = ", ".join(f"{name}: {size}x{size}" for name, size in sizes.items() if size != common)
    return f"{common}x{common}" + (f" ({others})" if others else "")


def write_doc(table: str, markers: tuple[str, str] = MARKERS) -> None:
    text = DOC.read_text()
    start, end = (text.index(marker) for marker in markers)
    DOC.write_text(text[:start + len(markers[0])] + "\n" + table + text[end:])


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` plus what ``old`` has and ``new`` did not measure: its other models, and the runs, GEMM ceilings
    and workflow cost of other thread counts."""
    rerun = set(new["threads"])
    for name, model in old["models"].items():
        if name in new["models"]:
            kept = [run for run in model["runs"] if run["threads"] not in rerun]
            new["models"][name]["runs"] = sorted(kept + new["models"][name]["runs"],
                                                 key=lambda run: (run["threads"], run["batch"]))
    new["models"] = {**{name: model for name, model in old["models"].items() if name not in new["models"]},
                     **new["models"]}
    new["threads"] = sorted(rerun | set(old["threads"]))
    new["gemm_ceiling"] = {**old["gemm_ceiling"], **new["gemm_ceiling"]}
    new.setdefault("workflow_cost", old.get("workflow_cost"))
    new["command"] = f"{old['command']}; then {new['command']}"
    return new


def output_folder(out: Path | None, no_docs: bool) -> Path | None:
    """Where a run writes its json and markdown: ``--out``, else results/ (the source of docs/benchmarks.md's
    tables), but nowhere for a ``--no-docs`` run without ``--out`` (results/ must stay what the docs show)."""
    return out if out is not None else (None if no_docs else RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "mobilenet_v2"])
    parser.add_argument("--families", action="store_true",
                        help=f"time the smallest member of each other family instead ({', '.join(FAMILY_SMALLEST)})")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["x86", "qnnpack"],
                        help="eager int8 backends to time (x86 first; it is the one optimized)")
    parser.add_argument("--repeats", type=int, default=20, help="kept rounds per table cell (default 20)")
    parser.add_argument("--image-size", type=int, help="input size (default: each model's crop size, 224 or 299)")
    parser.add_argument("--no-workflow-cost", action="store_true", help="skip the PTQ and QAT-step timings")
    parser.add_argument("--out", type=Path, help="folder for bench.json and bench.md (default: results/, the "
                        "docs tables' source; with --no-docs, nothing is written unless --out is given) "
                        "(bench-families.* with --families)")
    parser.add_argument("--no-docs", action="store_true",
                        help="do not update docs/benchmarks.md (nor results/, unless --out names it)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other thread counts (and the workflow cost, if skipped) of OUT/bench.json")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite docs/benchmarks.md's two tables from results/bench*.json")
    args = parser.parse_args()
    args.out = output_folder(args.out, args.no_docs)
    if args.render:
        for stem, markers in (("bench", MARKERS), ("bench-families", FAMILY_MARKERS)):
            write_doc(markdown(json.loads((RESULTS / f"{stem}.json").read_text())), markers)
        return
    if args.backends[0] != "x86":
        parser.error("--backends must start with x86 (qzoo's optimized path is built from the x86 model)")
    names = FAMILY_SMALLEST if args.families else args.models
    stem = "bench-families" if args.families else "bench"
    if args.merge and args.out is None:
        parser.error("--merge needs --out (the folder whose bench.json to merge into) when --no-docs is given")
    old = json.loads((args.out / f"{stem}.json").read_text()) if args.merge and (args.out / f"{stem}.json").is_file() \
        else None
    if old is not None and old.get("ort_fp32_exporter", TORCHSCRIPT_EXPORTER) != ORT_FP32_EXPORTER:
        parser.error(f"--merge: {args.out / stem}.json timed ORT files of torch's "
                     f"{old.get('ort_fp32_exporter', TORCHSCRIPT_EXPORTER)} exporter, this run would time those of "
                     f"its {ORT_FP32_EXPORTER} one: measure every thread count again instead of merging")
    with tempfile.TemporaryDirectory() as scratch:
        models = {name: bench_model(name, args.batches, args.threads, args.repeats, args.backends, Path(scratch),
                                    args.image_size) for name in names}
    report = {"command": " ".join(["python tools/bench.py", *sys.argv[1:]]), "machine": machine(),
              "ort_fp32_exporter": ORT_FP32_EXPORTER, "image_size": args.image_size, "threads": args.threads,
              "models": models,
              "gemm_ceiling": {str(t): gemm_ceiling(t, args.repeats) for t in args.threads}}
    if not args.no_workflow_cost:
        threads = max(args.threads)
        report["workflow_cost"] = {"threads": threads, "ptq_seconds": ptq_seconds(threads),
                                   "step_ms": training_steps_ms(threads)}
    if old is not None:
        report = merged(old, report)
    report["labels"] = list(dict.fromkeys(label for model in models.values() for run in model["runs"]
                                          for label in run["timings"]))
    table = markdown(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / f"{stem}.md").write_text(table)
    if not args.no_docs:
        write_doc(table, FAMILY_MARKERS if args.families else MARKERS)
    print(table)


if __name__ == "__main__":
    main()
