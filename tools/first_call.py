"""How much an int8 model's first call decides its speed: torch's x86 engine keeps one fast path per model.

Each packed int8 conv weight of torch's x86 engine caches oneDNN's primitive for the input shape and thread count
of its first call, and runs any other shape or thread count through a slower, uncached path. This tool times, per
model and batch size, eager int8 copies of one PTQ model (x86) that differ only in their first call: at the batch
timed under the threads timed (the cached path), at batch 2 (as a trace with a 2-image example leaves a model), and
at the batch timed under 1 thread.

    python tools/first_call.py                       # resnet18, mobilenet_v2, googlenet, inception_v3, regnet_x_400mf,
                                                     # efficientnet_lite0; batch 1 and 16; 2 threads
    python tools/first_call.py --models googlenet --batches 1 --no-docs

Writes ``results/first-call.json`` and the table in docs/benchmarks.md between the ``first-call-table`` markers.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

import qzoo
from qzoo import benchmark
from qzoo.data import synthetic_images

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalogue import ROOT, cpu_name, int8_isa, record_table  # noqa: E402
from bench import DOC, bench_float_model, int8_of  # noqa: E402

RESULTS = ROOT / "results" / "first-call.json"
MARKERS = ("<!-- first-call-table:start -->", "<!-- first-call-table:end -->")
FIRST_CALLS = ("this batch", "batch 2", "this batch, 1 thread")


def first_called(model: torch.nn.Module, images: torch.Tensor, threads: int) -> torch.nn.Module:
    """A fresh copy of ``model`` called once on ``images`` under ``threads`` threads."""
    fresh = copy.deepcopy(model)
    with benchmark.torch_threads(threads), torch.inference_mode():
        fresh(images)
    return fresh


def measure(name: str, batches: list[int], threads: int, repeats: int) -> list[dict[str, Any]]:
    size = qzoo.registry.model_spec(name).input_size[1]
    int8 = int8_of(bench_float_model(name, size), "x86", size)
    rows = []
    for batch in batches:
        images = synthetic_images(batch, size, seed=5)
        firsts = {"this batch": (images, threads), "batch 2": (synthetic_images(2, size, seed=1), threads),
                  "this batch, 1 thread": (images, 1)}
        runners = {label: first_called(int8, *first) for label, first in firsts.items()}
        with benchmark.torch_threads(threads):
            timings = benchmark.interleaved_timings(runners, images, repeats=repeats, warmup=1,
                                                    max_rounds=2 * repeats)
        rows.append({"model": name, "image_size": size, "batch": batch,
                     **{label: timing.median_ms for label, timing in timings.items()}})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [f"**{report['threads']} threads**, eager int8 (x86), median ms per call, by the first call the model "
             "copy saw", "",
             "| model | batch | first call: this batch | first call: batch 2 | first call: this batch, 1 thread | "
             "slowest / cached |", "|---|---|---|---|---|---|"]
    for row in report["rows"]:
        times = [row[label] for label in FIRST_CALLS]
        lines.append(f"| {row['model']} ({row['image_size']}) | {row['batch']} | "
                     + " | ".join(f"{t:.1f}" for t in times) + f" | {max(times) / times[0]:.2f} |")
    machine = report["machine"]
    lines += ["", f"Measured with `{report['command']}` on {machine['cpu']} ({machine['isa']}; {machine['cores']} "
              f"cores), torch {machine['torch']}, {machine['date']}: interleaved calls of the three copies of one "
              "PTQ model, each copy called once before timing as its column says."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2", "googlenet", "inception_v3",
                                                         "regnet_x_400mf", "efficientnet_lite0"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10, help="kept rounds per cell (default 10)")
    parser.add_argument("--no-docs", action="store_true", help="print the table; write neither results/ nor docs/")
    args = parser.parse_args()
    rows = [row for name in args.models for row in measure(name, args.batches, args.threads, args.repeats)]
    report = {"command": " ".join(["python tools/first_call.py", *sys.argv[1:]]), "threads": args.threads,
              "machine": {"cpu": cpu_name(), "isa": int8_isa(), "cores": os.cpu_count(), "torch": torch.__version__,
                          "date": datetime.date.today().isoformat()},
              "rows": rows}
    record_table(report, markdown(report), RESULTS, DOC, MARKERS, write=not args.no_docs)


if __name__ == "__main__":
    main()
