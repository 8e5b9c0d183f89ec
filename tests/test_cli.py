"""The ``qzoo`` command line, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import qzoo


def qzoo_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qzoo", *args], capture_output=True, text=True, timeout=300)


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


def test_bad_input_gives_one_line_error_and_nonzero_exit():
    result = qzoo_cli("demo", "--model", "resnet19")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "qzoo: error: unknown model 'resnet19'; did you mean resnet18, resnet152, resnet101? "
        "`qzoo list` (qzoo.list_models()) lists all 11"
    )
    assert "Traceback" not in result.stderr
