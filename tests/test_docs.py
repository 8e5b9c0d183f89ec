"""The README stays short and points at docs that exist; the generated tables have their markers."""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch

import qzoo

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_short_and_keeps_the_ci_test_command():
    assert len(README.splitlines()) <= 200
    command = README.split("<!-- test-command:start -->", 1)[1].split("<!-- test-command:end -->", 1)[0]
    assert "bash tests/run-legs.sh" in command
    script = (ROOT / "tests" / "run-legs.sh").read_text()
    assert '-e ".[test]"' in script and "-m pytest" in script and "python3 -m venv --clear" in script
    # CI's disk holds one leg at a time: no pip cache, each leg's environment and passed tests' folders removed
    assert script.count("--no-cache-dir") == 2 and 'rm -rf "$venv"' in script
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
        "tmp_path_retention_policy"] == "failed"
    assert sorted(p.stem for p in (ROOT / "tests" / "legs").glob("*.txt")) == ["newest", "oldest"]


def test_every_link_into_docs_exists():
    links = set(re.findall(r"\]\((docs/[^)#]+)", README))
    assert {"docs/cifar10.md", "docs/benchmarks.md", "docs/quantizable-blocks.md", "docs/quantization.md",
            "docs/guarantees.md", "docs/api.md", "docs/models.md"} <= links
    assert all((ROOT / link).is_file() for link in links)


def test_generated_tables_have_their_markers_in_docs():
    assert "<!-- bench-table:start -->" in (ROOT / "docs" / "benchmarks.md").read_text()
    assert "<!-- cifar10-table:start -->" in (ROOT / "docs" / "cifar10.md").read_text()


def test_the_models_table_lists_every_registered_model_and_is_current():
    table = (ROOT / "docs" / "models.md").read_text().split("<!-- models-table:start -->")[1].split("<!-- models-")[0]
    assert sorted(re.findall(r"^\| `(\w+)` \|", table, flags=re.M)) == qzoo.list_models()
    families = README.split("## Models", 1)[1].split("\n## ", 1)[0]
    members = {}
    for spec in qzoo.registry.model_specs():
        members.setdefault(spec.family, []).append(spec.name)
    assert all(any(f"`{name}`" in families for name in names) for names in members.values())  # a row per family
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "models_table.py"), "--check"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

def test_every_public_name_is_documented():
    """Each name ``qzoo`` exports appears in backticks in the README or docs/ (the API page, the models and
    classes tables), so nothing public is left for users to find by reading the source."""
    texts = README + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    quoted = set(re.findall(r"`(?:qzoo\.)?(\w+)[`(]", texts))
    assert [name for name in qzoo.__all__ if name not in quoted] == []


def test_readme_docs_and_the_cifar10_tool_name_no_folder_outside_the_repository():
    """A clone has no sibling data folders: the examples fetch data by name or take it as --data."""
    texts = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in (ROOT / "docs").glob("*.md")}}
    helps = {f"tools/cifar10.py {step} --help": subprocess.run(
        [sys.executable, str(ROOT / "tools" / "cifar10.py"), step, "mobilenet_v2", "--help"],
        capture_output=True, text=True, timeout=120, check=True).stdout for step in ("ptq", "train")}
    for where, text in {**texts, **helps}.items():
        assert not re.search(r"\.\./|shared/datasets", text), where
    assert "--data DATA" in helps["tools/cifar10.py ptq --help"] and "torch/cifar10" in helps["tools/cifar10.py ptq --help"]


def _tool(name: str) -> Any:
    if str(ROOT / "tools") not in sys.path:  # the tools import their shared modules as a script would
        sys.path.insert(0, str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cifar10_recheck_table_is_what_the_committed_folders_record():
    """docs/cifar10.md's table of the committed CIFAR-10 folders re-measured is rendered from their metrics.json,
    which `tools/publish.py --record-slices` writes (each folder once, all on one machine and rule)."""
    publish = _tool("publish")
    folders = publish._cifar10_folders()
    doc = publish.DOC.read_text().split(publish.RECHECK_MARKERS[0], 1)[1].split(publish.RECHECK_MARKERS[1], 1)[0]
    assert doc.strip() == publish.recheck_table(folders) and len(folders) == 5
    assert all(m["test_split"]["images"] == 10000 and "ties" in m["shipped_sample"] for m in folders.values())
    assert publish._published_acc1(folders["resnet18.cifar10_int8_ptq"]) == 92.47  # the run's, as docs/cifar10.md's
    assert publish._published_acc1(folders["mobilenet_v2.cifar10_float"]) == 87.40  # first table shows them


def test_the_cifar10_results_table_is_what_results_cifar10_json_records():
    """docs/cifar10.md's first table is rendered from results/cifar10.json (`tools/publish.py`, whose `--rebench`
    re-times the speed-up columns alone), and each model's line says where its accuracies and its speed were measured,
    the allocator included."""
    publish = _tool("publish")
    rows = publish._committed_rows()
    doc = publish.DOC.read_text().split(publish.TABLE_MARKERS[0], 1)[1].split(publish.TABLE_MARKERS[1], 1)[0]
    assert doc.strip() == publish.results_table(rows) and sorted(rows) == ["mobilenet_v2", "resnet18"]
    for model, row in rows.items():
        assert set(row["speedup"]) == {"1", "2"} and all(set(s) == {"1", "16"} for s in row["speedup"].values())
        assert f"- {model}: PTQ and evaluation measured {row['measured']['date']}" in doc
        assert f"; speed {row['speed_measured']['date']}" in doc and row["speed_measured"]["allocator"] in doc


def test_rebench_re_times_the_committed_ptq_folder_and_changes_nothing_else(tmp_path, monkeypatch):
    """`tools/publish.py --rebench --models mobilenet_v2` times the committed int8 folder against its float twin
    (fewer repeats here) and rewrites that row's speed-ups, latencies, page faults and where it was timed, in the
    results file and the table; the accuracies and the other row stay as committed."""
    from qzoo import workflow

    publish = _tool("publish")
    for name in ("RESULTS", "DOC"):
        copy = tmp_path / getattr(publish, name).name
        copy.write_text(getattr(publish, name).read_text())
        monkeypatch.setattr(publish, name, copy)
    committed = json.loads(publish.RESULTS.read_text())  # a stale speed record, so the rewrite shows
    committed["models"]["mobilenet_v2"].update(
        speed_measured={"date": "2000-01-01", "machine": "old", "cores": 0, "torch": "0", "allocator": "old"},
        latency_ms={}, fp32_page_faults_per_call={}, speedup={"1": {"1": 1.0, "16": 1.0}, "2": {"1": 1.0, "16": 1.0}})
    publish.RESULTS.write_text(json.dumps(committed))
    cifar10 = sys.modules["cifar10"]  # the module publish imported bench_report from

    def few_repeats(loaded, threads):
        with cifar10.torch_threads(threads):
            return workflow.bench(loaded, image_size=32, repeats=3)

    monkeypatch.setattr(cifar10, "_bench_threads", few_repeats)
    before = publish._committed_rows()
    publish.rebench(("mobilenet_v2",))
    after = publish._committed_rows()
    speed_keys = {"speedup", "latency_ms", "fp32_page_faults_per_call", "speed_measured"}
    assert after["resnet18"] == before["resnet18"]
    assert {k: v for k, v in after["mobilenet_v2"].items() if k not in speed_keys} == {
        k: v for k, v in before["mobilenet_v2"].items() if k not in speed_keys}
    row = after["mobilenet_v2"]
    for threads in ("1", "2"):
        for batch in ("1", "16"):
            latency = row["latency_ms"][threads][batch]
            assert row["speedup"][threads][batch] == latency["fp32"] / latency["int8"]
            assert {"int8 eager", "int8 onnxruntime"} <= set(latency)
    assert row["speed_measured"]["date"] == datetime.date.today().isoformat()
    assert row["speed_measured"]["allocator"] == cifar10.allocator() and row["speed_measured"]["cores"] == os.cpu_count()
    doc = publish.DOC.read_text().split(publish.TABLE_MARKERS[0], 1)[1].split(publish.TABLE_MARKERS[1], 1)[0]
    assert doc.strip() == publish.results_table(after)


def test_publish_refuses_a_bench_without_its_record_and_rebench_a_model_without_its_folder(tmp_path, monkeypatch):
    """`tools/publish.py` refuses an old-format bench.json (no record of where it was timed) before it copies any
    folder, and `--rebench` refuses a model with no committed PTQ folder; neither writes a file."""
    publish = _tool("publish")
    runs, weights = tmp_path / "runs", tmp_path / "weights"
    shutil.copytree(publish.WEIGHTS / "resnet18.cifar10_int8_ptq", runs / "resnet18-ptq" / "model")
    shutil.copyfile(runs / "resnet18-ptq" / "model" / "metrics.json", runs / "resnet18-ptq" / "report.json")
    (runs / "resnet18-ptq" / "bench.json").write_text(json.dumps({"1": {"speedup": {"1": 4.0, "16": 4.0}}}))
    for name, value in (("RUNS", runs), ("WEIGHTS", weights), ("RESULTS", tmp_path / "cifar10.json"),
                        ("DOC", tmp_path / "cifar10.md")):
        monkeypatch.setattr(publish, name, value)
    with pytest.raises(SystemExit, match="predates the record of where it was timed: rerun python tools/cifar10.py "
                                         "bench resnet18"):
        publish.publish("data", None, ("resnet18",))
    with pytest.raises(SystemExit, match="--rebench: resnet18 has no committed PTQ folder"):
        publish.rebench(("resnet18",))
    assert not weights.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_the_float_logits_tool_scores_one_pass_as_evaluate_scores_the_model():
    """tools/float_logits.py runs each model once and scores those logits: the metrics are what
    ``train.evaluate`` gives on the model itself, and each image's top-1 is the logits' ``argmax``."""
    from types import SimpleNamespace

    from qzoo import train
    from qzoo.data import ImageTensors

    tool = _tool("float_logits")
    generator = torch.Generator().manual_seed(0)
    data = ImageTensors(torch.randint(0, 256, (250, 3, 8, 8), dtype=torch.uint8, generator=generator),
                        torch.randint(0, 4, (250,), generator=generator), ("a", "b", "c", "d"), None)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4)).eval()
    transforms = SimpleNamespace(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    metrics, top1 = tool._top1(model, data, transforms)
    batches = data.batches(100, mean=transforms.mean, std=transforms.std)
    assert metrics == train.evaluate(model, batches) and metrics["images"] == 250
    with torch.no_grad():
        assert torch.equal(top1, torch.cat([model(x) for x, _ in batches]).argmax(1))


def test_the_tools_name_a_cpu_by_its_model_name_family_and_model(tmp_path):
    """Measurements record the CPU as "AMD EPYC family 26 model 2": the bare model name of a cloud machine
    covers several generations (two "AMD EPYC" machines of this project ran fp32 several times apart)."""
    catalogue = _tool("_catalogue")
    block = ("processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: 2\n"
             "model name\t: AMD EPYC\n")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(block.format(n=0, family=26) + "\n" + block.format(n=1, family=25))
    assert catalogue.cpu_name(cpuinfo) == "AMD EPYC family 26 model 2"  # the first processor's
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n")  # an Arm machine: no family
    assert catalogue.cpu_name(cpuinfo) == (platform.processor() or platform.machine())


def test_the_float_logits_table_is_what_its_results_record():
    """docs/quantization.md's float-logits table is rendered from results/float-logits.json, every published
    int8 entry in it, each measured with no ties once its logits are float."""
    tool = _tool("float_logits")
    results = json.loads(tool.RESULTS.read_text())
    doc = tool.DOC.read_text().split(tool.MARKERS[0], 1)[1].split(tool.MARKERS[1], 1)[0]
    assert doc.strip() == tool.table(results)
    assert [row["entry"] for row in results["rows"]] == tool.CIFAR10 + tool.IMAGENET
    assert all(row["float_logits"]["ties"] == 0 < row["rounded"]["ties"] for row in results["rows"])


def test_the_benchmark_tables_are_what_their_results_record():
    """docs/benchmarks.md's two speed tables are tools/bench.py's rendering of results/bench.json and
    results/bench-families.json (``--render`` rewrites them), each saying how ORT's fp32 file was exported, and
    its ONNX Runtime profile table is tools/ort_profile.py's rendering of results/ort-profile.json."""
    bench = _tool("bench")
    text = bench.DOC.read_text()
    for stem, markers in (("bench", bench.MARKERS), ("bench-families", bench.FAMILY_MARKERS)):
        report = json.loads((bench.RESULTS / f"{stem}.json").read_text())
        table = text.split(markers[0], 1)[1].split(markers[1], 1)[0]
        assert table.strip() == bench.markdown(report).strip()
        exporter = report.get("ort_fp32_exporter", bench.TORCHSCRIPT_EXPORTER)
        assert f"ORT fp32 is the float model as torch's {exporter} ONNX exporter writes it" in table
    profile = _tool("ort_profile")
    results = json.loads(profile.RESULTS.read_text())
    table = text.split(profile.MARKERS[0], 1)[1].split(profile.MARKERS[1], 1)[0]
    assert table.strip() == profile.markdown(results["rows"], results["meta"])
    assert bench.output_folder(None, no_docs=False) == bench.RESULTS  # a documenting run writes the source
    assert bench.output_folder(None, no_docs=True) is None  # a side measurement leaves results/ as the docs show it
    assert bench.output_folder(ROOT / "elsewhere", no_docs=True) == ROOT / "elsewhere"


def test_the_allocator_table_is_what_its_results_record_and_names_the_allocator():
    """docs/benchmarks.md's allocator table is tools/allocator.py's rendering of results/allocator.json, and each
    speed table says which allocator its run used (glibc's defaults, or the environment's settings)."""
    tool = _tool("allocator")
    report = json.loads(tool.RESULTS.read_text())
    text = tool.DOC.read_text()
    assert text.split(tool.MARKERS[0], 1)[1].split(tool.MARKERS[1], 1)[0].strip() == tool.markdown(report).strip()
    assert report["settings"] == {"default": None, "raised": tool.RAISED}
    catalogue = _tool("_catalogue")
    assert text.count(f"Memory: {catalogue.DEFAULT_ALLOCATOR}") == 2


def test_the_first_call_table_is_what_its_results_record():
    """docs/benchmarks.md's table of int8 copies that differ only in their first call is tools/first_call.py's
    rendering of results/first-call.json, with all three first calls for every row."""
    tool = _tool("first_call")
    report = json.loads(tool.RESULTS.read_text())
    text = tool.DOC.read_text()
    assert text.split(tool.MARKERS[0], 1)[1].split(tool.MARKERS[1], 1)[0].strip() == tool.markdown(report).strip()
    assert report["rows"] and all(set(tool.FIRST_CALLS) <= set(row) for row in report["rows"])


def test_allocator_children_differ_only_in_glibcs_tunables(monkeypatch):
    tool = _tool("allocator")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")
    default, raised = (tool.child_environment(setting) for setting in tool.SETTINGS.values())
    assert "GLIBC_TUNABLES" not in default and raised["GLIBC_TUNABLES"] == tool.RAISED
    assert not any(key.startswith("MALLOC_") for key in {**default, **raised})
    assert {k: v for k, v in raised.items() if k != "GLIBC_TUNABLES"} == default
    catalogue = _tool("_catalogue")
    assert catalogue.allocator() == "GLIBC_TUNABLES=glibc.malloc.tcache_count=0, MALLOC_ARENA_MAX=2"
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert catalogue.allocator() == catalogue.DEFAULT_ALLOCATOR


def test_allocator_rows_are_each_settings_median_over_its_children():
    tool = _tool("allocator")

    def child(ms: float) -> dict:
        return {"cells": [{"model": "m", "batch": 4, "fp32_ms_per_image": ms, "fp32_faults_per_call": 10 * ms}]}

    rows = tool.combined({"default": [child(1.0), child(3.0), child(9.0)], "raised": [child(0.5)]})
    assert rows == [{"model": "m", "batch": 4, "default fp32_ms_per_image": 3.0, "default fp32_faults_per_call": 30.0,
                     "raised fp32_ms_per_image": 0.5, "raised fp32_faults_per_call": 5.0}]


def test_bench_refuses_to_merge_runs_of_another_exporter_before_measuring(tmp_path):
    """One table, one exporter: --merge into results whose ORT files the TorchScript-based exporter wrote (a report
    without the field) stops at once, naming both exporters; so does --merge with --no-docs and no --out."""
    report = json.loads((ROOT / "results" / "bench.json").read_text())
    report.pop("ort_fp32_exporter")
    (tmp_path / "bench.json").write_text(json.dumps(report))
    tool = [sys.executable, str(ROOT / "tools" / "bench.py"), "--merge"]
    done = subprocess.run([*tool, "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "TorchScript-based exporter" in done.stderr and "torch.export-based" in done.stderr
    done = subprocess.run([*tool, "--no-docs"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--merge needs --out" in done.stderr


def test_the_published_lite_files_table_is_what_its_results_record():
    """docs/imagenet-sample.md's table of the published int8 files on each CPU and torch is rendered from
    results/imagenet-lite-published.json (one run per CPU, threads and torch), and its interval is the paired one."""
    lite = _tool("imagenet_lite")
    runs = json.loads(lite.PUBLISHED_RESULTS.read_text())["runs"]
    doc = lite.DOC.read_text().split(lite.PUBLISHED_MARKERS[0], 1)[1].split(lite.PUBLISHED_MARKERS[1], 1)[0]
    assert doc.strip() == lite.published_table(runs) and len(runs) >= 1
    assert all(set(run["models"]) == set(lite.MODELS) for run in runs.values())
    machine = {key: runs[next(iter(runs))][key] for key in ("cpu", "isa", "threads", "torch")}
    again = lite.with_run(runs, machine, {"efficientnet_lite1": {"date": "later"}})  # one model measured again
    assert again.keys() == runs.keys() and list(again[next(iter(runs))]["models"]) == list(lite.MODELS)
    assert [row.get("date") == "later" for row in again[next(iter(runs))]["models"].values()] == [False, True, False]
    assert len(lite.with_run(runs, {**machine, "threads": 99}, {"efficientnet_lite0": {}})) == len(runs) + 1
    # 10 images: float right on 8; int8 loses images 0 and 1, wins image 9 (float wrong there), else the same
    labels = torch.arange(10)
    reference = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 0, 0]), 10).float()
    measured = torch.nn.functional.one_hot(torch.tensor([5, 5, 2, 3, 4, 5, 6, 7, 0, 9]), 10).float()
    half_width = 100 * 1.96 * math.sqrt(3 - 1 / 10) / 10
    assert lite.paired_drop(reference, measured, labels) == {
        "drop_top1": 10.0, "lost": 2, "won": 1, "drop_top1_ci95": [round(10 - half_width, 2), round(10 + half_width, 2)]}
    assert lite.logit_sqnr_db(reference, reference * 1.1) == 20.0  # noise 0.01 of the signal's power
    tied = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 3.0]])  # rows 0 and 2 tie; row 0's label is tied
    assert lite.top_ties(tied, torch.tensor([1, 0, 0])) == {"tied_top": 2, "tied_top_with_label": 1}


def test_the_cifar10_tool_trains_a_longer_recipe_with_cutout_and_records_it(tmp_path, monkeypatch):
    """`tools/cifar10.py train --epochs N --cutout S` (prepared for the next GPU run): the recipe runs N epochs,
    the recorded command names both flags, and a checkpoint of another cutout is refused, not resumed."""
    from helpers import make_image_folder

    from qzoo.pretrained import CIFAR10_CLASSES

    tool = _tool("cifar10")
    monkeypatch.setattr(tool, "RUNS", tmp_path / "runs")
    data = make_image_folder(tmp_path / "data", classes=CIFAR10_CLASSES, per_class=(2, 1))
    tool.train_float("resnet18", str(data), None, None, None, epochs=2, cutout=16)
    config = json.loads((tool.float_folder("resnet18") / "config.json").read_text())
    assert config["recipe"] == "python tools/cifar10.py train resnet18 --data data --epochs 2 --cutout 16"
    from qzoo.train import _CHECKPOINT

    state = json.loads((tmp_path / "runs" / "resnet18-float" / _CHECKPOINT / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2] and state["identity"] == {"cutout": 16}
    assert state["recipe"]["epochs"] == 2 and state["recipe"]["lr"] == tool.FLOAT_RECIPES["resnet18"].lr
    with pytest.raises(ValueError, match="checkpoint of another run"):
        tool.train_float("resnet18", str(data), None, None, None, epochs=2, cutout=8)
    usage = subprocess.run([sys.executable, str(ROOT / "tools" / "cifar10.py"), "ptq", "resnet18", "--cutout", "16"],
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2
    assert "--epochs, --cutout, --weight-decay and --epochs-within are for train" in usage.stderr


def test_the_cifar10_tool_sizes_a_run_to_the_time_given_and_records_the_epochs_it_chose(tmp_path, monkeypatch):
    """`train --epochs-within SECONDS` (how the H200 runs were sized to their lease): whole epochs of the timed
    speed, each with its evaluation and a 1.15x margin, after a second warm-up, at most --epochs; too little time is
    refused naming the epoch time. End to end, the recorded command names the epochs run and the weight decay."""
    from helpers import make_image_folder

    from qzoo import train
    from qzoo.pretrained import CIFAR10_CLASSES

    tool = _tool("cifar10")
    recipe = tool.FLOAT_RECIPES["mobilenet_v2"]
    timed = []

    def fake_timing(model, batches, recipe, warmup_steps, **speed):
        timed.append((len(list(batches)), warmup_steps, speed))
        return 2.0, 0.5

    real_timing = train.seconds_per_step
    monkeypatch.setattr(train, "seconds_per_step", fake_timing)
    plan = [None] * 4  # an epoch of 4 steps: 2 s, 2.3 s with the margin (the evaluation takes no time here)
    speed = {"device": None}
    fits = tool.epochs_that_fit(None, recipe, lambda epoch: plan, lambda model: None,
                                time.perf_counter() + 2.0 + 5 * 2.3 + 1.0, None, speed)
    assert fits == 5 and timed == [(40, 10, speed)]  # 10 warm-up steps and 30 timed, across epochs
    evaluations = []

    def first_evaluation_slow(model):  # the first evaluation autotunes (3.6 s on the H200, 0.3 s after): not timed
        evaluations.append(time.sleep(1.0 if not evaluations else 0.0))

    assert tool.epochs_that_fit(None, recipe, lambda epoch: plan, first_evaluation_slow,
                                time.perf_counter() + 1.0 + 2.0 + 5 * 2.3 + 1.0, None, speed) == 5
    assert len(evaluations) == 2
    assert tool.epochs_that_fit(None, recipe, lambda epoch: plan, lambda model: None,
                                time.perf_counter() + 100.0, 3, speed) == 3
    with pytest.raises(SystemExit, match=r"an epoch takes about 2\.3 s here \(warm-up 2\.0 s\), not even 1 fit"):
        tool.epochs_that_fit(None, recipe, lambda epoch: plan, lambda model: None, time.perf_counter() + 4.0, None,
                             speed)
    monkeypatch.setattr(train, "seconds_per_step", real_timing)
    monkeypatch.setattr(tool, "RUNS", tmp_path / "runs")
    data = make_image_folder(tmp_path / "data", classes=CIFAR10_CLASSES, per_class=(2, 1))
    tool.train_float("mobilenet_v2", str(data), None, None, None, epochs=2, weight_decay=1e-4, epochs_within=600)
    config = json.loads((tool.float_folder("mobilenet_v2") / "config.json").read_text())
    assert config["recipe"] == "python tools/cifar10.py train mobilenet_v2 --data data --epochs 2 --weight-decay 0.0001"
    monkeypatch.setattr(tool, "epochs_that_fit", None)  # a rerun resumes the sized run without timing again
    tool.train_float("mobilenet_v2", str(data), None, None, None, epochs=5, weight_decay=1e-4, epochs_within=1)
    assert json.loads((tool.float_folder("mobilenet_v2") / "config.json").read_text())["recipe"] == config["recipe"]
    tool.quantize("mobilenet_v2", "ptq", str(data), None, None)  # the report names the data, not this machine's path
    assert json.loads((tmp_path / "runs" / "mobilenet_v2-ptq" / "report.json").read_text())["data"] == "data"
