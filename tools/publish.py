"""Turn the CIFAR-10 runs into weights entries, the results file and the table in docs/cifar10.md.

    python tools/publish.py                  # weights/<entry>/, its qzoo/weights.json entries, results/cifar10.json, docs/cifar10.md
    python tools/publish.py --models resnet18  # the same for one model; the others' entries and rows stay as committed
    python tools/publish.py --record-slices  # re-measure the committed folders' accuracy only, and their table
    python tools/publish.py --rebench        # re-time the committed PTQ folders only: the table's speed-up columns
    (--data and --data-dir as tools/cifar10.py takes them: the test images the slices are measured on)
    python tools/publish.py --push ORG       # maintainers: upload each weights/ folder to ORG/<entry> on the hub

Reads ``runs/cifar10/`` as ``tools/cifar10.py`` leaves it; a step that has not run yet is
left out of the entries and shown as "not run" in the table. Each model's row records where and
when it was measured, since models can be published from different runs and machines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
from pathlib import Path
from typing import Any

import torch

import qzoo
from qzoo import pretrained, train
from qzoo.data import ImageTensors
from qzoo.workflow import data_root

from _catalogue import cpu_name, folder_entry, replace_between, update_index  # tools/ is on sys.path when this script runs
from cifar10 import add_data_arguments, bench_report, load_split

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "cifar10"
WEIGHTS = ROOT / "weights"
RESULTS = ROOT / "results" / "cifar10.json"
DOC = ROOT / "docs" / "cifar10.md"
MODELS = ("resnet18", "mobilenet_v2")
TARGETS = {"resnet18": {"ptq": 0.5, "qat": 0.2}, "mobilenet_v2": {"ptq": 1.5, "qat": 0.5}}  # max acc@1 drop
SHIPPED_FLOAT = ("mobilenet_v2",)  # float ResNet18 (45 MB) stays out of the repository's 60 MB budget
LICENSE = "BSD-3-Clause (qzoo); trained on CIFAR-10 (Krizhevsky, 2009)"


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _copy_folder(source: Path, name: str, metrics: dict[str, Any]) -> Path:
    target = WEIGHTS / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for item in ("config.json", "README.md", "model.safetensors"):
        shutil.copyfile(source / item, target / item)
    # the run's own folder ("out") is a path on the machine that ran it, not a metric
    kept = {key: value for key, value in metrics.items() if key != "out"}
    (target / "metrics.json").write_text(json.dumps(kept, indent=2) + "\n")
    return target


TEST_SLICE = {"split": "test", "count": 1000, "seed": 0}  # ImageTensors.balanced_sample(count, seed=seed)
SHIPPED_SAMPLE = {"split": "test", "archive": "qzoo/sample_data/cifar10-sample.tar.gz"}  # the demo's test images
RECHECK_MARKERS = ("<!-- cifar10-recheck:start -->", "<!-- cifar10-recheck:end -->")


def _record_slices(folder: Path, test: ImageTensors, data: str) -> None:
    """Add the model's accuracy on the whole test split, on a fixed class-balanced slice of it, and on the test
    images shipped inside the package to metrics.json, measured now with this qzoo's evaluation: for the tests that
    re-check committed weights without the 10,000-image evaluation (the shipped ones need no data set at all), and
    for the re-check table beside the published figures, which keep what their runs measured."""
    model = qzoo.from_pretrained(folder)
    sample = test.balanced_sample(TEST_SLICE["count"], seed=TEST_SLICE["seed"])
    shipped = ImageTensors.from_folder(data_root(ROOT / SHIPPED_SAMPLE["archive"], "test"), size=32, progress=False)
    measured = {"date": datetime.date.today().isoformat(), "machine": cpu_name(), "torch": torch.__version__}
    path = folder / "metrics.json"
    path.write_text(json.dumps({
        **json.loads(path.read_text()),
        "test_split": {"split": "test", "data": Path(data).name, **train.evaluate(model, test.batches(500)),
                       "measured": measured},
        "test_slice": {**TEST_SLICE, "data": Path(data).name, **train.evaluate(model, sample.batches(500)),
                       "measured": measured},
        "shipped_sample": {**SHIPPED_SAMPLE, **train.evaluate(model, shipped.batches(500)), "measured": measured},
    }, indent=2) + "\n")


def _published_acc1(metrics: dict[str, Any]) -> float:
    """The whole-test-split acc@1 a folder was published with: its run's int8 evaluation, or the float run's last."""
    return metrics["int8"]["acc1"] if "int8" in metrics else metrics["history"][-1]["eval"]["acc1"]


def recheck_table(folders: dict[str, dict[str, Any]]) -> str:
    """The markdown table of the committed folders' accuracy as published and as re-measured (``folders``: each
    folder's metrics.json), with the images that tie at the top."""
    lines = ["| weights folder | published acc@1 | re-measured acc@1 (ties at the top) | slice of 1,000 "
             "| shipped 2,000 (ties) |", "|---|---|---|---|---|"]
    for name, metrics in folders.items():
        split, slice_, shipped = metrics["test_split"], metrics["test_slice"], metrics["shipped_sample"]
        lines.append(f"| `{name}` | {_published_acc1(metrics):.2f} | {split['acc1']:.2f} ({split['ties']}) "
                     f"| {slice_['acc1']:.2f} | {shipped['acc1']:.2f} ({shipped['ties']}) |")
    where = sorted({tuple(m["test_split"]["measured"][k] for k in ("date", "machine", "torch"))
                    for m in folders.values()})
    lines += ["", "Re-measured " + "; ".join(f"{date} on {machine}, torch {version}"
                                             for date, machine, version in where)]
    return "\n".join(lines)


def _cifar10_folders() -> dict[str, dict[str, Any]]:
    return {entry["name"]: json.loads((WEIGHTS / entry["name"] / "metrics.json").read_text())
            for entry in json.loads(pretrained.INDEX.read_text()) if ".cifar10_" in entry["name"]}


def record_slices(data: str, data_dir: str | None) -> None:
    """Re-measure every committed weights folder (after a change of how accuracy is measured) and its table."""
    test = load_split("test", data, data_dir)
    for name in _cifar10_folders():
        _record_slices(WEIGHTS / name, test, data)
        print(name, json.loads((WEIGHTS / name / "metrics.json").read_text())["test_split"])
    _write_recheck_table()


def _write_recheck_table() -> None:
    DOC.write_text(replace_between(DOC.read_text(), RECHECK_MARKERS, recheck_table(_cifar10_folders())))


def _committed_rows() -> dict[str, Any]:
    """The rows of results/cifar10.json, each with its own ``measured`` (older files recorded it once, at the top)."""
    committed = _json(RESULTS) or {"models": {}}
    shared = {key: committed[key] for key in ("date", "machine", "cpu_count", "torch") if key in committed}
    return {model: {"measured": shared, **row} for model, row in committed["models"].items()}


def publish(data: str, data_dir: str | None, models: tuple[str, ...] = MODELS) -> None:
    for model in models:  # refused before any folder is copied
        bench = _json(RUNS / f"{model}-ptq" / "bench.json")
        if bench and "by_threads" not in bench:
            raise SystemExit(f"{RUNS / f'{model}-ptq' / 'bench.json'} predates the record of where it was timed: "
                             f"rerun python tools/cifar10.py bench {model}")
    entries: list[dict[str, Any]] = []
    results = _committed_rows()
    measured = {"date": datetime.date.today().isoformat(), "machine": cpu_name(), "cpu_count": torch.get_num_threads(),
                "torch": torch.__version__}
    for model in models:
        float_run = _json(RUNS / f"{model}-float" / "checkpoint" / "state.json")
        row: dict[str, Any] = {"measured": measured,
                               "float_epochs": f"{float_run['epoch']} of {float_run['recipe']['epochs']}"
                               if float_run else "not run yet"}
        unquantized = f"{model}.cifar10_float"  # an entry only where SHIPPED_FLOAT ships it
        if model in SHIPPED_FLOAT and (RUNS / f"{model}-float" / "model").is_dir():
            name = f"{model}.cifar10_float"
            folder = _copy_folder(RUNS / f"{model}-float" / "model", name, {"history": float_run["history"]})
            entries.append(folder_entry(name, folder, default=True, unquantized=None, license=LICENSE))
        for step in ("ptq", "qat"):
            report = _json(RUNS / f"{model}-{step}" / "report.json")
            if report is None:
                continue
            row["float"] = report["float"]["acc1"]
            row[step] = report["int8"]["acc1"]
            row[f"{step}_drop"] = report["float"]["acc1"] - report["int8"]["acc1"]
            row[f"{step}_target_met"] = row[f"{step}_drop"] <= TARGETS[model][step]
            row["float_file_bytes"], row["int8_file_bytes"] = report["float_file_bytes"], report["int8_file_bytes"]
            name = f"{model}.cifar10_int8_{step}"
            folder = _copy_folder(RUNS / f"{model}-{step}" / "model", name, report)
            entries.append(folder_entry(name, folder, unquantized=unquantized, license=LICENSE,
                                        default=step == "qat" or not (RUNS / f"{model}-qat" / "report.json").is_file()))
        bench = _json(RUNS / f"{model}-ptq" / "bench.json")
        if bench:
            _record_speed(row, bench)
        results[model] = row
    test = load_split("test", data, data_dir)
    for entry in entries:
        _record_slices(WEIGHTS / entry["name"], test, data)
    update_index(entries, owns=lambda name: name.split(".")[0] in models and ".cifar10_" in name)
    _write_results(results)
    _write_recheck_table()
    print(f"{len(entries)} entries; results in {RESULTS.relative_to(ROOT)}")


def _record_speed(row: dict[str, Any], bench: dict[str, Any]) -> None:
    """Put a bench report (``tools/cifar10.py bench``'s) into a results row: the speed-ups, the latencies they come
    from (eager int8 and ONNX Runtime too), torch fp32's page faults per call (glibc's allocator: docs/benchmarks.md)
    and where and how it was timed."""
    for key in ("speedup", "latency_ms", "fp32_page_faults_per_call"):
        row[key] = {threads: report[key] for threads, report in bench["by_threads"].items()}
    row["speed_measured"] = bench["measured"]


def rebench(models: tuple[str, ...]) -> None:
    """Re-time the committed ``<model>.cifar10_int8_ptq`` folders against their float twins (speed does not depend
    on the weights) and rewrite the speed-up columns; accuracies, folders and entries stay as committed."""
    results = _committed_rows()
    for model in models:
        folder = WEIGHTS / f"{model}.cifar10_int8_ptq"
        if model not in results or not folder.is_dir():
            raise SystemExit(f"--rebench: {model} has no committed PTQ folder and row; publish it first")
        _record_speed(results[model], bench_report(folder))
        print(model, results[model]["speedup"])
    _write_results(results)


def _write_results(results: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "targets_max_acc1_drop": TARGETS,
        "commands": "python tools/cifar10.py {train,ptq,qat,bench} MODEL; python tools/publish.py [--models MODEL]; "
                    "python tools/publish.py --rebench",
        "models": {model: results[model] for model in MODELS if model in results}}, indent=2) + "\n")
    DOC.write_text(replace_between(DOC.read_text(), TABLE_MARKERS, results_table(results)))


def _cell(row: dict[str, Any], step: str) -> str:
    if step not in row:
        return "not run yet"
    verdict = "met" if row[f"{step}_target_met"] else "**missed**"
    return f"{row[step]:.2f} ({-row[f'{step}_drop']:+.2f}; target {verdict})"


TABLE_MARKERS = ("<!-- cifar10-table:start -->", "<!-- cifar10-table:end -->")


def results_table(results: dict[str, Any]) -> str:
    """docs/cifar10.md's table of results/cifar10.json's rows, each with a line saying where its accuracies and its
    speed were measured (they can come from different runs)."""
    lines = ["| model | float epochs | float acc@1 | PTQ int8 acc@1 | QAT int8 acc@1 | file fp32 / int8 | "
             "int8 speed-up b1 / b16 (1 thread) | (2 threads) |", "|---|---|---|---|---|---|---|---|"]
    for model, row in results.items():
        sizes = (f"{row['float_file_bytes'] / 2**20:.1f} / {row['int8_file_bytes'] / 2**20:.1f} MiB"
                 if "int8_file_bytes" in row else "")
        speed = {t: f"{s['1']:.2f}x / {s['16']:.2f}x" for t, s in row.get("speedup", {}).items()}
        float_acc = f"{row['float']:.2f}" if "float" in row else "not run yet"
        lines.append(f"| {model} | {row['float_epochs']} | {float_acc} | {_cell(row, 'ptq')} | {_cell(row, 'qat')} "
                     f"| {sizes} | {speed.get('1', '')} | {speed.get('2', '')} |")
    lines.append("")
    for model, row in results.items():
        where, timed = row["measured"], row.get("speed_measured")
        speed = (f"speed {timed['date']} on {timed['machine']} ({timed['cores']} cores), torch {timed['torch']}, "
                 f"{timed['allocator']}" if timed else "speed not measured")
        lines.append(f"- {model}: PTQ and evaluation measured {where['date']} on {where['machine']} "
                     f"({where['cpu_count']} threads), torch {where['torch']}; {speed}")
    return "\n".join(lines)


def push(org: str) -> None:
    for entry in json.loads(pretrained.INDEX.read_text()):
        if not (WEIGHTS / entry["name"]).is_dir():  # files published elsewhere (pip packages)
            continue
        model = qzoo.from_pretrained(WEIGHTS / entry["name"])
        config = json.loads((WEIGHTS / entry["name"] / "config.json").read_text())
        extra = {k: config[k] for k in ("name", "metrics", "transforms", "categories", "recipe", "license") if k in config}
        print(qzoo.push_to_hub(model, f"{org}/{entry['name']}", **extra))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--push", metavar="ORG", help="upload every weights/ folder to ORG/<entry> on the hub")
    only.add_argument("--record-slices", action="store_true",
                      help="re-measure the committed folders' accuracy (test split, slice, shipped sample) only")
    only.add_argument("--rebench", action="store_true",
                      help="re-time the committed PTQ folders of --models (fp32 vs int8, 1 and 2 threads) only")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated models to publish from runs/ (default {','.join(MODELS)}); the "
                        "others' entries, folders and rows stay as committed")
    add_data_arguments(parser)
    args = parser.parse_args()
    models = tuple(args.models.split(","))
    if unknown := sorted(set(models) - set(MODELS)):
        parser.error(f"--models: unknown {unknown}; choose from {','.join(MODELS)}")
    if args.push:
        push(args.push)
    elif args.rebench:
        rebench(models)
    elif args.record_slices:
        record_slices(args.data, args.data_dir)
    else:
        publish(args.data, args.data_dir, models)


if __name__ == "__main__":
    main()
