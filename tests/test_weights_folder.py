"""The repository's weights/ folders, qzoo/weights.json and the shipped demo agree with each other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import qzoo
from qzoo import pretrained, registry, train
from qzoo._files import file_sha256
from qzoo.data import ImageTensors, unpack_archive
from qzoo.demo import SAMPLE_ARCHIVE
from qzoo.workflow import data_root

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
CIFAR10 = ROOT.parent / "shared" / "datasets" / "cifar10" / "cifar10-jpeg.tar.gz"
QZOO_ENTRIES = [e for e in pretrained.catalogue().values() if e.hub_repo is not None]
CIFAR10_ENTRIES = [e for e in QZOO_ENTRIES if "CIFAR-10" in e.metrics]
"""The CIFAR-10 example's entries (the EfficientNet-Lite ones are re-checked in test_efficientnet_lite)."""


def test_every_entry_has_its_folder_and_every_folder_its_entry():
    folders = sorted(p.name for p in WEIGHTS.iterdir() if p.is_dir()) if WEIGHTS.is_dir() else []
    assert folders == sorted(e.name for e in QZOO_ENTRIES)


@pytest.mark.parametrize("entry", QZOO_ENTRIES, ids=lambda e: e.name)
def test_folder_matches_entry(entry):
    folder = WEIGHTS / entry.name
    config = json.loads((folder / "config.json").read_text())
    assert file_sha256(folder / "model.safetensors") == entry.sha256 == config["sha256"]
    assert (config["architecture"], config["kwargs"], config["backend"]) == (
        entry.architecture, dict(entry.kwargs), entry.backend)
    assert config["metrics"] == {k: dict(v) for k, v in entry.metrics.items()}
    assert (folder / "README.md").is_file() and (folder / "metrics.json").is_file()
    model = qzoo.from_pretrained(folder)
    assert qzoo.is_int8(model) == (entry.mode == "int8")


def test_committed_weights_stay_under_60_mb():
    total = sum(p.stat().st_size for p in WEIGHTS.rglob("*") if p.is_file()) if WEIGHTS.is_dir() else 0
    assert total < 60e6


@pytest.mark.skipif(not (WEIGHTS / "mobilenet_v2.cifar10_float").is_dir(),
                    reason="weights/mobilenet_v2.cifar10_float is not in this checkout (run tools/publish.py)")
def test_the_readme_main_job_reports_real_accuracy():
    result = subprocess.run([sys.executable, "-m", "qzoo", "demo", "--json"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["calibration_images"] == 500 and report["int8"]["images"] == 2000
    assert report["float"]["acc1"] > 50 and report["float"]["acc1"] - report["int8"]["acc1"] < 3
    assert report["int8_file_bytes"] < 0.3 * report["float_file_bytes"]


def test_qzoo_entries_never_displace_the_factories_imagenet_defaults():
    for entry in QZOO_ENTRIES:
        if entry.mode == "int8" and registry.model_spec(entry.architecture).int8_weights is not None:
            assert pretrained.resolve_int8(registry.model_spec(entry.architecture), None, None).url is not None
            with pytest.raises(ValueError, match="from_pretrained"):
                qzoo.get_model(entry.architecture, quantize=True, weights=entry.name)


@pytest.fixture(scope="module")
def cifar10_test():
    if not CIFAR10.is_file():
        pytest.skip(f"{CIFAR10} is absent (a fresh clone has no ../shared; CI has it)")
    return ImageTensors.from_folder(unpack_archive(CIFAR10) / "test", size=32, progress=False)


@pytest.mark.parametrize("entry", CIFAR10_ENTRIES, ids=lambda e: e.name)
def test_committed_weights_keep_their_recorded_accuracy_on_a_fixed_test_slice(entry, cifar10_test):
    """tools/publish.py records each model's acc@1 on a seeded class-balanced slice of the test
    images; on this machine int8 and float give the same predictions again (a tolerance of 3
    images out of 1,000 leaves room for another CPU family's rounding)."""
    recorded = json.loads((WEIGHTS / entry.name / "metrics.json").read_text())["test_slice"]
    sample = cifar10_test.balanced_sample(recorded["count"], seed=recorded["seed"])
    measured = train.evaluate(qzoo.from_pretrained(WEIGHTS / entry.name), sample.batches(500), progress=False)
    assert measured["images"] == recorded["images"] == 1000
    assert abs(measured["acc1"] - recorded["acc1"]) <= 0.3
    assert abs(recorded["acc1"] - entry.metrics["CIFAR-10"]["acc1"]) < 4  # the slice is representative


@pytest.fixture(scope="module")
def shipped_test_images():
    return ImageTensors.from_folder(data_root(SAMPLE_ARCHIVE, "test"), size=32, progress=False)


@pytest.mark.parametrize("entry", CIFAR10_ENTRIES, ids=lambda e: e.name)
def test_committed_weights_keep_their_recorded_accuracy_on_the_shipped_sample(entry, shipped_test_images):
    """The same promise on the 2,000 test images inside the package, so it holds in a fresh clone
    without ../shared: within 3 images of what tools/publish.py recorded, far above chance (10 %)."""
    recorded = json.loads((WEIGHTS / entry.name / "metrics.json").read_text())["shipped_sample"]
    measured = train.evaluate(qzoo.from_pretrained(WEIGHTS / entry.name), shipped_test_images.batches(500),
                              progress=False)
    assert measured["images"] == recorded["images"] == 2000
    assert abs(measured["acc1"] - recorded["acc1"]) <= 0.15 and measured["acc1"] > 70


def test_publish_refuses_an_unknown_model_or_two_jobs_before_touching_anything():
    """`tools/publish.py --models` publishes some models and keeps the others' entries; a name it does not
    know is refused by name, before any weights folder, index entry or result is rewritten."""
    before = (ROOT / "qzoo" / "weights.json").read_bytes()
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "publish.py"), "--models", "resnet18,vgg16"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "unknown ['vgg16']" in result.stderr
    both = subprocess.run([sys.executable, str(ROOT / "tools" / "publish.py"), "--rebench", "--record-slices"],
                          capture_output=True, text=True, cwd=ROOT)  # two jobs at once: refused, not one chosen
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert (ROOT / "qzoo" / "weights.json").read_bytes() == before
