"""The ``qzoo`` command line, run as a user runs it."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch
import torchvision
from helpers import GLIBC_PAGE_BY_PAGE, GLIBC_PAGE_BY_PAGE_REASON, make_image_folder, write_png16

import qzoo
import qzoo.cli
from qzoo import workflow
from qzoo.data import ImageTensors
from qzoo.registry import IMAGENET_MEAN, IMAGENET_STD
from qzoo.onnx_export import OnnxRuntimeModel


def qzoo_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qzoo", *args], capture_output=True, text=True, timeout=300, env=env)


def test_version_names_qzoo_torch_and_torchvision():
    result = qzoo_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == (
        f"qzoo {qzoo.__version__} (torch {torch.__version__}, torchvision {torchvision.__version__})")


def test_list_json():
    result = qzoo_cli("list", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == qzoo.list_models()


def test_demo_reports_fidelity_size_and_speed():
    result = qzoo_cli("demo", "--model", "resnet18", "--image-size", "32", "--calibration-images", "16", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "resnet18" and report["backend"] == "x86"
    assert report["cosine_similarity"] > 0.9
    assert 0.24 < report["size_ratio"] < 0.3
    assert set(report["latency_ms"]) == {"1", "16"}
    assert all(times["fp32"] > 0 and times["int8"] > 0 for times in report["latency_ms"].values())


def test_demo_prints_a_readable_report():
    result = qzoo_cli("demo", "--model", "mobilenet_v2", "--image-size", "32", "--calibration-images", "16")
    assert result.returncode == 0, result.stderr
    assert "not accuracy" in result.stdout and "int8 speed-up" in result.stdout


@pytest.mark.skipif(not GLIBC_PAGE_BY_PAGE, reason=GLIBC_PAGE_BY_PAGE_REASON)
def test_bench_says_when_fp32_takes_its_memory_from_the_system_on_every_call_and_how_to_keep_it(capsys):
    """At 224x224 and batch 16 MobileNetV2's float activations pass glibc's mapping size: qzoo bench counts the page
    faults of an fp32 call, names the allocator's share of the speed-up and the setting that keeps the memory; under
    that setting the faults are gone and so is the note."""
    default = qzoo_cli("bench", "mobilenet_v2", "--repeats", "3")
    assert default.returncode == 0, default.stderr
    note = [line for line in default.stdout.splitlines() if "page faults per call" in line]
    assert len(note) == 1 and "at batch 16" in note[0] and qzoo.benchmark.GLIBC_RAISED_THRESHOLDS in note[0]
    environment = {**os.environ, "GLIBC_TUNABLES": qzoo.benchmark.GLIBC_RAISED_THRESHOLDS}
    raised = qzoo_cli("bench", "mobilenet_v2", "--repeats", "3", "--json", env=environment)
    report = json.loads(raised.stdout)
    faults = report["fp32_page_faults_per_call"]
    assert faults["1"] == 0 and faults["16"] < qzoo.benchmark.NOTABLE_PAGE_FAULTS, faults
    qzoo.cli._allocator_note(report)
    assert capsys.readouterr().out == ""


def test_bad_input_gives_one_line_error_and_nonzero_exit():
    result = qzoo_cli("demo", "--model", "resnet19")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "qzoo: error: unknown model 'resnet19'; did you mean resnet18, resnet152, resnet101? "
        f"`qzoo list` (qzoo.list_models()) lists all {len(qzoo.list_models())}"
    )
    assert "Traceback" not in result.stderr
    weights = qzoo_cli("eval", "mobilenet_v2.cifar10_int8_ptq", "--weights", "IMAGENET1K_V1", "--data", "d")
    assert weights.returncode == 2 and weights.stderr.strip() == (
        "qzoo: error: --weights IMAGENET1K_V1 picks float weights for a model name, but mobilenet_v2.cifar10_int8_ptq "
        "brings its own weights (a folder, weights entry or hub repository): drop --weights")
    ignored = qzoo_cli("demo", "--image-size", "64")  # would be ignored: the CIFAR-10 demo has its own size
    assert ignored.returncode == 2 and ignored.stderr.strip() == (
        "qzoo: error: --image-size goes with --model: without it the demo runs the shipped CIFAR-10 model on the "
        "shipped sample, at its own size")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained_float_folder(tiny_data, tmp_path_factory):
    """A float ResNet18 trained on tiny_data's train split until it classifies it: a model whose
    test accuracy means something, so int8 agreeing with it is not one lucky image in 18."""
    torch.manual_seed(0)
    model = qzoo.resnet18(num_classes=3)
    train_set = ImageTensors.from_folder(tiny_data / "train", 32, cache=False, progress=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    for epoch in range(10):  # reaches 18 of 18 test images in float
        for x, y in train_set.batches(12, mean=IMAGENET_MEAN, std=IMAGENET_STD, shuffle=True, seed=epoch):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    transforms = {"crop_size": 32, "resize_size": 32, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return qzoo.save_pretrained(model.eval(), tmp_path_factory.mktemp("float") / "resnet18", transforms=transforms)


def test_ptq_then_eval_bench_and_export_end_to_end(tiny_data, trained_float_folder, tmp_path):
    out = tmp_path / "int8"
    result = qzoo_cli("ptq", str(trained_float_folder), "--data", str(tiny_data), "--calib-images", "12",
                      "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["calibration_images"] == 12 and report["float"]["images"] == report["int8"]["images"] == 18
    assert report["held_out"] is True  # train/ and test/: the accuracy is on images calibration never saw
    assert report["float"]["acc1"] > 80 and report["int8"]["acc1"] > 80  # chance is 33 %
    assert report["int8_file_bytes"] < 0.27 * report["float_file_bytes"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    evaluated = json.loads(qzoo_cli("eval", str(out), "--data", str(tiny_data), "--json").stdout)
    assert [evaluated[k] for k in ("acc1", "acc5", "ties")] == [report["int8"][k] for k in ("acc1", "acc5", "ties")]
    bench = qzoo_cli("bench", str(out), "--image-size", "32", "--repeats", "3", "--json")
    assert bench.returncode == 0, bench.stderr
    assert set(json.loads(bench.stdout)["latency_ms"]) == {"1", "16"}
    chosen = qzoo_cli("bench", str(out), "--image-size", "32", "--repeats", "3", "--batches", "3", "1", "3", "--json")
    assert list(json.loads(chosen.stdout)["latency_ms"]) == ["3", "1"], chosen.stderr  # in the order asked, once each
    exported = qzoo_cli("export", str(out), "--out", str(tmp_path / "m.pt"), "--json")  # checked at its crop, 32
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["note"].endswith("checked bit-exact at 32x32")
    assert "Warning" not in exported.stderr
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode(), qzoo.quantized_engine("x86"):
        assert torch.equal(scripted(x), qzoo.from_pretrained(out)(x))
    onnx_path = tmp_path / "m.onnx"
    sized = qzoo_cli("export", str(out), "--image-size", "32", "--format", "onnx", "--out", str(onnx_path))
    assert sized.returncode == 2 and "--image-size is for --format torchscript" in sized.stderr
    exported = qzoo_cli("export", str(out), "--format", "onnx", "--out", str(onnx_path))
    assert exported.returncode == 0, exported.stderr
    assert "Warning" not in exported.stderr
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    assert logits.shape == (2, 3) and torch.equal(logits, OnnxRuntimeModel(onnx_path, threads=1)(x))


def test_a_folder_without_splits_is_reported_as_not_held_out(tiny_data, tmp_path, capsys):
    """One ImageFolder serves as both splits: the report says the accuracy is on calibration images; a train
    split smaller than --calib-images is said to have calibrated with all of its images."""
    assert qzoo.cli.main(["ptq", "resnet18", "--data", str(tiny_data / "train"), "--image-size", "32",
                          "--calib-images", "6", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "note: the data has no train/ and test/ folders, so qzoo ptq calibrates on images it also evaluates" in out
    assert "note: the train split has" not in out  # 6 asked, 6 used
    assert ("note: resnet18 has random weights (a model name without --weights), so these accuracies mean nothing: "
            "add --weights (its float entries: resnet18.imagenet1k_v1) or name a trained folder") in out
    assert qzoo.cli.main(["ptq", "resnet18", "--data", str(tiny_data), "--image-size", "32",
                          "--calib-images", "6", "--out", str(tmp_path / "b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["held_out"] is True
    assert qzoo.cli.main(["ptq", "resnet18", "--data", str(tiny_data), "--image-size", "32",
                          "--calib-images", "100", "--out", str(tmp_path / "c")]) == 0
    assert ("  note: the train split has 36 images, so all of them calibrated the model (--calib-images asked for "
            "100)") in capsys.readouterr().out.splitlines()
    assert workflow.split_is_held_out("torch/cifar10") and not workflow.split_is_held_out(tiny_data / "test")


def test_reports_say_how_many_images_tie_at_the_top(capsys):
    """A tie decides a top-1 by rule rather than by the logits: the report says how many there were, if any."""
    qzoo.cli._print_report({"float": {"acc1": 78.15, "acc5": 98.8, "images": 2000, "ties": 0},
                            "int8": {"acc1": 77.5, "acc5": 98.95, "images": 2000, "ties": 46}})
    assert capsys.readouterr().out.splitlines() == [
        "  float acc@1  78.15 %   acc@5  98.80 %   (2000 images)",
        "  int8  acc@1  77.50 %   acc@5  98.95 %   (2000 images, 46 tied at the top)"]


def test_bad_data_and_sources_give_one_line_errors(tiny_data, tmp_path, capsys):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    colour16 = tmp_path / "colour16" / "cat" / "0.png"
    colour16.parent.mkdir(parents=True)
    write_png16(colour16, np.full((32, 32, 3), 40000, dtype=np.uint16))
    cases = [
        (("eval", "resnet18", "--data", str(tmp_path / "missing")), "no data folder at"),
        (("eval", "resnet18", "--data", str(tmp_path / "empty")), "has class folders but no images"),
        (("eval", "resnet18", "--data", str(tmp_path / "colour16"), "--image-size", "32"), "16 bits per colour"),
        (("eval", "resnet19", "--data", str(tiny_data)), "neither a folder"),
        (("ptq", "resnet18", "--weights", "resnet50.imagenet1k_v1", "--data", str(tiny_data), "--out", "x"),
         "float weights of resnet50; give resnet18's float weights"),
        (("export", "resnet18", "--out", str(tmp_path / "f.pt")), "export int8 models"),
        (("info", "resnet18.cifar100"), "unknown weights"),
        (("predict", str(tmp_path / "x.jpg"), "--model", "resnet18"),
         "--model resnet18 names an architecture, which has random weights: name a weights entry (its entries: "
         "resnet18.cifar10_int8_ptq"),
    ]
    for args, message in cases:  # in-process for speed; the resnet19 case above runs a real process
        assert qzoo.cli.main([*args, "--json"]) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qzoo: error: ") and message in lines[0], (args, lines)


def _commands() -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = [a for a in qzoo.cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_status:
        qzoo.cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_status.value.code == 0 and "example" in out and "--json" in out
    silent = [a.option_strings or a.dest for a in _commands()[command]._actions if not a.help]
    assert silent == [], f"qzoo {command}: options without a help line"


def test_list_pretrained_and_info():
    entries = json.loads(qzoo_cli("list", "--pretrained", "--json").stdout)
    assert "mobilenet_v2.imagenet1k_qnnpack_v1" in entries
    info = json.loads(qzoo_cli("info", "mobilenet_v2.imagenet1k_qnnpack_v1", "--json").stdout)
    assert (info["backend"], info["sha256"], info["metrics"]["ImageNet-1K"]["acc1"]) == ("qnnpack", "37f702c5", 71.658)


def test_info_prints_text_a_person_reads(capsys):
    """Without --json: the model's documentation as written (not an escaped JSON string), an entry's fields."""
    assert qzoo.cli.main(["info", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("resnet18 (qzoo.models.resnet)\n\n" + qzoo.resnet18.__doc__.strip().splitlines()[0])
    assert "\\n" not in out and out.rstrip().endswith("weights entries: " + ", ".join(qzoo.list_weights("resnet18")))
    assert qzoo.cli.main(["info", "mobilenet_v2.imagenet1k_qnnpack_v1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "backend       qnnpack" in lines and "url           None" not in lines
    assert any(line.startswith("metrics       {\"ImageNet-1K\": {\"acc1\": 71.658") for line in lines), lines


def test_qat_prints_one_readable_line_per_epoch_beside_the_bars(tiny_data, tmp_path, capsys):
    """stdout holds the report alone; each epoch's summary goes to stderr with the progress bars."""
    assert qzoo.cli.main(["qat", "resnet18", "--data", str(tiny_data), "--image-size", "32", "--epochs", "2",
                          "--batch-size", "12", "--out", str(tmp_path / "q")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "qzoo qat: resnet18" and "{" not in out
    assert "(18 images; the source model, before QAT)" in out.splitlines()[1]
    summaries = re.findall(r"epoch (\d)/2: loss \d+\.\d{3}, \d+\.\d s; fake-quant acc@1 \d+\.\d\d %; int8 acc@1 "
                           r"\d+\.\d\d %", err)
    assert summaries == ["1", "2"]
    assert "of the model's" not in out  # every class has training images: no subset note


def test_qat_on_a_subset_of_the_models_classes_says_so(tiny_data, tmp_path, capsys):
    """Training images of two of the model's three classes: the report counts them and the text warns that QAT
    fits the model to those (the third class is seldom predicted after)."""
    subset = tmp_path / "data"
    for split in ("train", "test"):
        for name in ("cat", "ship"):
            shutil.copytree(tiny_data / split / name, subset / split / name)
    transforms = {"crop_size": 32, "resize_size": 32, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    source = qzoo.save_pretrained(qzoo.resnet18(num_classes=3).eval(), tmp_path / "float", transforms=transforms,
                                  categories=["cat", "dog", "ship"])
    assert qzoo.cli.main(["qat", str(source), "--data", str(subset), "--epochs", "1", "--batch-size", "12",
                          "--out", str(tmp_path / "q"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["trained_classes"], report["model_classes"]) == (2, 3)
    assert qzoo.cli.main(["qat", str(source), "--data", str(subset), "--epochs", "1", "--batch-size", "12",
                          "--out", str(tmp_path / "q2")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == (
        "  note: the train split has images of 2 of the model's 3 classes; QAT fits the model to those and it "
        "will seldom predict the others (train on images of every class to keep them)")
    assert "random weights" not in out  # a trained folder, not a bare architecture


def test_list_prints_a_table_of_models_and_of_entries(capsys):
    assert qzoo.cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["model", "family"] and len(lines) == 1 + len(qzoo.list_models())
    row = next(line for line in lines if line.startswith("mobilenet_v2 "))
    assert row.split(None, 2)[1:] == ["mobilenetv2", "float cifar10_float, imagenet1k_v1, imagenet1k_v2; int8 "
                                      "cifar10_int8_ptq, cifar10_int8_qat, imagenet1k_qnnpack_v1"]
    assert qzoo.cli.main(["list", "--pretrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(qzoo.list_weights())
    assert next(line for line in lines if line.startswith("mobilenet_v2.imagenet1k_qnnpack_v1 ")).split() == [
        "mobilenet_v2.imagenet1k_qnnpack_v1", "int8", "qnnpack", "71.66", "(ImageNet-1K)", "3.4"]


def test_bench_runs_with_the_threads_asked_for_and_restores_them(capsys):
    before = torch.get_num_threads()
    asked = before + 1  # another number than the one in force, so a missing restore shows
    assert qzoo.cli.main(["bench", "mobilenet_v2.cifar10_int8_ptq", "--image-size", "32", "--repeats", "2",
                          "--threads", str(asked), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["threads"] == asked and torch.get_num_threads() == before
    with pytest.raises(RuntimeError), qzoo.benchmark.torch_threads(asked):  # restored on the way out of an error too
        assert torch.get_num_threads() == asked
        raise RuntimeError
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("machine", "noted"), [("x86_64", True), ("aarch64", False)])
def test_qnnpack_timings_on_an_x86_cpu_say_which_backend_is_fast_there(machine, noted, monkeypatch, capsys):
    monkeypatch.setattr(qzoo.cli.platform, "machine", lambda: machine)
    assert qzoo.cli.main(["bench", "mobilenet_v2.cifar10_float", "--backend", "qnnpack", "--image-size", "32",
                          "--repeats", "2"]) == 0
    assert ("note: qnnpack's int8 kernels are written for ARM CPUs" in capsys.readouterr().out) == noted
