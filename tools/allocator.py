"""torch fp32 and qzoo's int8 latency under glibc's default malloc and with its two thresholds raised, side by side.

glibc's malloc serves every block over its mapping threshold (at most 32 MB on 64-bit Linux) with a fresh mapping
and unmaps it on free, so a forward pass whose activations pass that size faults all their pages in again on every
call: at 224x224, a batch of 16 float images does, a batch of 4 does not. This tool measures what that costs torch
fp32 and qzoo's optimized int8 path (x86) per image at each batch size, and how it moves int8's speed-up over fp32.

    python tools/allocator.py                      # resnet18, mobilenet_v2, efficientnet_lite0; batch 1, 4, 16, 64
    python tools/allocator.py --models resnet18 --batches 1 16 --rounds 1 --no-docs

The setting can only be made before a process starts, so each round runs one child process per setting, in
alternating order; each child builds the models as tools/bench.py does and times fp32 and int8 round-robin with the
quiet-machine guard of ``qzoo.benchmark.interleaved_timings``, the int8 model a fresh copy first called at the batch
size timed (tools/first_call.py says why). The table gives the median over rounds of each child's median.
Writes ``results/allocator.json`` and the table in docs/benchmarks.md between the ``allocator-table`` markers.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import qzoo
from qzoo import benchmark
from qzoo.data import synthetic_images
from qzoo.inference import optimize_for_inference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalogue import ROOT, cpu_name, record_table, replace_between  # noqa: E402
from bench import DOC, bench_float_model, int8_of  # noqa: E402

RESULTS = ROOT / "results" / "allocator.json"
MARKERS = ("<!-- allocator-table:start -->", "<!-- allocator-table:end -->")
RAISED = benchmark.GLIBC_RAISED_THRESHOLDS
SETTINGS = {"default": None, "raised": RAISED}
IMAGE_SIZE = 224


def measure(models: list[str], batches: list[int], threads: int, repeats: int) -> dict[str, Any]:
    """One child's timings: per model and batch, median ms per image of fp32 and int8, and page faults per call."""
    torch.set_num_threads(threads)
    cells = []
    for name in models:
        float_model = bench_float_model(name, IMAGE_SIZE)
        quantized = int8_of(float_model, "x86", IMAGE_SIZE)
        for batch in batches:
            images = synthetic_images(batch, IMAGE_SIZE, seed=5)
            int8 = optimize_for_inference(copy.deepcopy(quantized), images)  # first called at this batch size
            timings = benchmark.interleaved_timings({"fp32": float_model, "int8": int8}, images, repeats=repeats,
                                                    warmup=2, max_rounds=3 * repeats)
            faults = {label: benchmark.page_faults_per_call(model, images)
                      for label, model in (("fp32", float_model), ("int8", int8))}
            cells.append({"model": name, "batch": batch,
                          **{f"{label}_ms_per_image": t.median_ms / batch for label, t in timings.items()},
                          **{f"{label}_faults_per_call": count for label, count in faults.items()}})
            print(json.dumps(cells[-1]), file=sys.stderr, flush=True)
    return {"cells": cells, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_environment(setting: str | None) -> dict[str, str]:
    """This process's environment with ``GLIBC_TUNABLES`` set to ``setting`` (removed for the default), without the
    ``MALLOC_*`` variables that would set glibc's thresholds for both settings."""
    environment = {key: value for key, value in os.environ.items()
                   if key != "GLIBC_TUNABLES" and not key.startswith("MALLOC_")}
    if setting:
        environment["GLIBC_TUNABLES"] = setting
    return environment


def run_child(setting: str | None, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--models", *args.models, "--batches", *map(str, args.batches),
               "--threads", str(args.threads), "--repeats", str(args.repeats)]
    done = subprocess.run(command, env=child_environment(setting), stdout=subprocess.PIPE, check=True, text=True)
    return json.loads(done.stdout)


def combined(children: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per model and batch, the median over a setting's children of every figure, keyed ``<setting> <figure>``."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for setting, runs in children.items():
        for index, cell in enumerate(runs[0]["cells"]):
            row = rows.setdefault((cell["model"], cell["batch"]), {"model": cell["model"], "batch": cell["batch"]})
            for figure in cell:
                if figure not in ("model", "batch"):
                    row[f"{setting} {figure}"] = statistics.median(run["cells"][index][figure] for run in runs)
    return list(rows.values())


def markdown(report: dict[str, Any]) -> str:
    lines = [f"**{report['threads']} threads**, {IMAGE_SIZE}x{IMAGE_SIZE} (median ms per image; page faults of one "
             "call; \"raised\": `GLIBC_TUNABLES=" + report["settings"]["raised"] + "`)", "",
             "| model | batch | torch fp32 default | torch fp32 raised | fp32 default / raised | qzoo int8 default | "
             "qzoo int8 raised | int8 / fp32 default | int8 / fp32 raised | fp32 page faults default / raised |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        fp32, int8 = (row[f"default {k}_ms_per_image"] for k in ("fp32", "int8"))
        fp32_raised, int8_raised = (row[f"raised {k}_ms_per_image"] for k in ("fp32", "int8"))
        lines.append(f"| {row['model']} | {row['batch']} | {fp32:.2f} | {fp32_raised:.2f} | {fp32 / fp32_raised:.2f} | "
                     f"{int8:.2f} | {int8_raised:.2f} | {int8 / fp32:.2f} | {int8_raised / fp32_raised:.2f} | "
                     f"{row['default fp32_faults_per_call']:,.0f} / {row['raised fp32_faults_per_call']:,.0f} |")
    machine = report["machine"]
    lines += ["", f"Measured with `{report['command']}` on {machine['cpu']} ({machine['cores']} cores), "
              f"{machine['libc']} (transparent huge pages: {machine['transparent_huge_pages']}), "
              f"torch {machine['torch']}, {machine['date']}: {report['rounds']} round(s), each one child process per "
              "setting in alternating order, the median of the rounds' medians; peak memory "
              f"{report['max_rss_mib']['default']:.0f} MiB (default) / {report['max_rss_mib']['raised']:.0f} MiB "
              "(raised). Models as tools/bench.py builds them; int8 is qzoo's optimized x86 path."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2", "efficientnet_lite0"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="kept calls per cell and child (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="child processes per setting (default 3)")
    parser.add_argument("--no-docs", action="store_true", help="print the table; write neither results/ nor docs/")
    parser.add_argument("--render", action="store_true", help="measure nothing: rewrite the docs table from results/")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.models, args.batches, args.threads, args.repeats)))
        return
    if args.render:
        DOC.write_text(replace_between(DOC.read_text(), MARKERS, markdown(json.loads(RESULTS.read_text()))))
        return
    if "LD_PRELOAD" in os.environ:
        parser.error(f"LD_PRELOAD={os.environ['LD_PRELOAD']} would run both settings on the preloaded library, "
                     "not on glibc's malloc: unset it for this tool")
    children: dict[str, list[dict[str, Any]]] = {setting: [] for setting in SETTINGS}
    for round_index in range(args.rounds):
        order = list(SETTINGS) if round_index % 2 == 0 else list(reversed(SETTINGS))
        for setting in order:
            children[setting].append(run_child(SETTINGS[setting], args))
    report = {"command": " ".join(["python tools/allocator.py", *sys.argv[1:]]), "settings": SETTINGS,
              "threads": args.threads, "rounds": args.rounds,
              "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "libc": " ".join(platform.libc_ver()),
                          "transparent_huge_pages": benchmark.transparent_huge_pages(),
                          "torch": torch.__version__, "qzoo": qzoo.__version__,
                          "date": datetime.date.today().isoformat()},
              "max_rss_mib": {setting: max(run["max_rss_mib"] for run in runs) for setting, runs in children.items()},
              "rows": combined(children)}
    record_table(report, markdown(report), RESULTS, DOC, MARKERS, write=not args.no_docs)


if __name__ == "__main__":
    main()
