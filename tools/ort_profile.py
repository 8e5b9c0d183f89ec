"""Why qzoo's int8 file runs slower on ONNX Runtime than ORT's own int8 of the same float model, per family.

    pip install -e ".[bench]"
    python tools/ort_profile.py                                  # each family's smallest member, batch 1, 1 and 2 threads
    python tools/ort_profile.py --models regnet_x_400mf --threads 2 --batch 16

For each model: qzoo's x86 int8 model exported by qzoo's writer, and ORT's own static QDQ
quantization of the float model (per-channel, calibrated on the same 64 synthetic images; the
model built as ``tools/bench.py`` builds it). First their wall times, interleaved: ORT's own file,
qzoo's file in a bare ORT session (the graphs alone), and qzoo's file through ``OnnxRuntimeModel``
(what users call: its NaN/Inf input check and tensor conversions on top). Both files are loaded
with ORT's full graph optimization, the optimized graphs are saved and their operators counted, and
both run under ORT's profiler, taking turns call by call (``--runs`` calls each, the first left
out): time per operator type, and operators only one of the two graphs has.
Writes ``results/ort-profile.json`` and the table in docs/benchmarks.md between the
``ort-profile`` markers.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

import qzoo
from qzoo.benchmark import interleaved_latency_ms
from qzoo.onnx_export import OnnxRuntimeModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalogue import ROOT, cpu_name, replace_between
from bench import (FAMILY_SMALLEST, ORT_FP32_EXPORTER, TORCHSCRIPT_EXPORTER, bench_float_model, int8_of,
                   onnx_runners)

RESULTS = ROOT / "results" / "ort-profile.json"
DOC = ROOT / "docs" / "benchmarks.md"
MARKERS = ("<!-- ort-profile:start -->", "<!-- ort-profile:end -->")


def _session(path: Path, threads: int, optimized: Path, profile_prefix: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(optimized)
    options.enable_profiling = True
    options.profile_file_prefix = str(profile_prefix)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _profiles(paths: dict[str, Path], images: torch.Tensor, threads: int, runs: int,
              folder: Path) -> dict[str, dict[str, Any]]:
    """Per file: operator counts of ORT's optimized graph, and mean microseconds per call by operator type.
    The profiled sessions take turns call by call (who goes first alternates), so both see the same noise."""
    sessions = {label: _session(path, threads, folder / f"{label}-optimized.onnx", folder / label)
                for label, path in paths.items()}
    feeds = {label: {session.get_inputs()[0].name: images.numpy()} for label, session in sessions.items()}
    labels = list(sessions)
    for call in range(runs):
        for label in labels[call % 2:] + labels[:call % 2]:
            sessions[label].run(None, feeds[label])
    return {label: _read_profile(session, folder / f"{label}-optimized.onnx") for label, session in sessions.items()}


def _read_profile(session: onnxruntime.InferenceSession, optimized: Path) -> dict[str, Any]:
    events = json.loads(Path(session.end_profiling()).read_text())
    calls = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    warm = calls[0]["ts"] + calls[0]["dur"]  # the first call packs weights: left out
    per_op: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= warm:
            per_op[event["args"]["op_name"]] += event["dur"]
    total_runs = len(calls) - 1
    counts = collections.Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
    return {"ops": dict(counts), "us_per_call": {k: round(v / total_runs, 1) for k, v in per_op.most_common()},
            "total_us": round(sum(per_op.values()) / total_runs, 1)}


def compare(name: str, batch: int, threads: int, runs: int) -> dict[str, Any]:
    size = qzoo.registry.model_spec(name).input_size[1]
    model = bench_float_model(name, size)
    int8 = int8_of(model, "x86", size)
    images = qzoo.synthetic_images(batch, size, seed=5)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runners, _ = onnx_runners(model, threads, folder, size)  # writes ORT's own fp32.onnx and int8.onnx
        qzoo_path = folder / "qzoo.onnx"
        qzoo.export_onnx(int8, qzoo_path)
        ours = OnnxRuntimeModel(qzoo_path, threads=threads)
        wall = interleaved_latency_ms({
            "ORT int8": runners["ORT int8 QDQ"],
            "qzoo file": lambda x: ours.session.run(None, {ours.input_name: x.numpy()}),  # the bare session
            "qzoo int8": ours,  # what users call: OnnxRuntimeModel, with its NaN/Inf check and tensor conversions
        }, images, repeats=3 * runs)
        profiles = _profiles({"ort": folder / "int8.onnx", "qzoo": qzoo_path}, images, threads, runs, folder)
    ort, ours_profile = profiles["ort"], profiles["qzoo"]
    row = {"model": name, "batch": batch, "threads": threads, "ort_own_int8": ort, "qzoo_int8": ours_profile,
           "wall_ms": {k: round(v, 3) for k, v in wall.items()},
           "file_ratio": round(wall["qzoo file"] / wall["ORT int8"], 2),
           "wall_ratio": round(wall["qzoo int8"] / wall["ORT int8"], 2),
           "kernel_ratio": round(ours_profile["total_us"] / ort["total_us"], 2)}
    print(json.dumps({k: row[k] for k in ("model", "batch", "threads", "wall_ms", "file_ratio", "wall_ratio",
                                          "kernel_ratio")}), flush=True)
    return row


def _ops_only_in(a: dict[str, int], b: dict[str, int]) -> str:
    """Operators whose count in ``a`` exceeds ``b``'s, as ``Op xN``."""
    return ", ".join(f"{op} x{a[op] - b.get(op, 0)}" for op in sorted(a) if a[op] > b.get(op, 0)) or "none"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"Measured {meta['date']} on {meta['cpu']} ({meta['cores']} cores), onnxruntime {meta['onnxruntime']}, "
             f"torch {meta['torch']}: `{meta['command']}` (ORT's profiler: kernel time per call, µs, over "
             f"{meta['runs'] - 1} calls after the first; ORT's own int8 file quantized from the float model as "
             f"torch's {meta.get('ort_fp32_exporter', TORCHSCRIPT_EXPORTER)} ONNX exporter writes it)", "",
             "| model | batch | threads | wall ms: ORT int8 / qzoo's file, bare session (ratio) / qzoo's "
             "OnnxRuntimeModel (ratio) | kernel µs: ORT int8 / qzoo int8 (ratio) | "
             "ops only ORT's optimized graph has | ops only qzoo's has | qzoo's top 3 op types (µs) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ort, ours = row["ort_own_int8"], row["qzoo_int8"]
        top = ", ".join(f"{op} {us:.0f}" for op, us in list(ours["us_per_call"].items())[:3])
        wall = row["wall_ms"]
        lines.append(f"| {row['model']} | {row['batch']} | {row['threads']} | {wall['ORT int8']:.2f} / "
                     f"{wall['qzoo file']:.2f} ({row['file_ratio']:.2f}) / {wall['qzoo int8']:.2f} "
                     f"({row['wall_ratio']:.2f}) | {ort['total_us']:.0f} / "
                     f"{ours['total_us']:.0f} ({row['kernel_ratio']:.2f}) | {_ops_only_in(ort['ops'], ours['ops'])} | "
                     f"{_ops_only_in(ours['ops'], ort['ops'])} | {top} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=FAMILY_SMALLEST)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-docs", action="store_true",
                        help="print the table only: neither docs/benchmarks.md nor results/ort-profile.json (its "
                             "source) changes")
    args = parser.parse_args()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows += [compare(name, args.batch, threads, args.runs) for name in args.models]
    meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "runs": args.runs,
            "ort_fp32_exporter": ORT_FP32_EXPORTER,
            "command": " ".join(["python tools/ort_profile.py", *sys.argv[1:]])}
    table = markdown(rows, meta)
    print(table)
    if not args.no_docs:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        DOC.write_text(replace_between(DOC.read_text(), MARKERS, table))


if __name__ == "__main__":
    main()
