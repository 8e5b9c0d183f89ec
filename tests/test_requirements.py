"""The torch releases qzoo accepts: refused at import below the minimum, and the same range in the package metadata."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from qzoo.requirements import MINIMUM_TORCH, SUPPORTED_TORCH, check_torch_version


@pytest.mark.parametrize(("version", "accepted"), [
    ("2.9.1", False), ("2.10.0a0", False), ("2.10.0", True), ("2.14.1+cu128", True), ("2.15.0+cu132", True),
])
def test_torch_older_than_2_10_is_refused_at_import(version, accepted):
    if accepted:
        check_torch_version(version)
    else:
        with pytest.raises(ImportError, match=f"needs torch>=2.10, found torch {re.escape(version)}: .*weights_only"):
            check_torch_version(version)


def leg_pins(leg: str) -> dict[str, tuple[int, ...]]:
    lines = (Path(__file__).parent / "legs" / f"{leg}.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    return {name: tuple(map(int, version.split("."))) for name, version in pins.items()}


def test_the_package_metadata_pins_the_range_ci_tests_at_both_ends():
    """pyproject.toml, the import check and the two CI legs (tests/legs) name one torch range: the
    oldest leg is the minimum, the newest leg's minor release the last one admitted."""
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    oldest, newest = leg_pins("oldest"), leg_pins("newest")
    assert oldest["torch"][:2] == MINIMUM_TORCH == (2, 10)
    assert SUPPORTED_TORCH == f">=2.10,<2.{newest['torch'][1] + 1}"
    assert f"torch{SUPPORTED_TORCH}" in project["dependencies"]
    assert "torchvision>=0.25,<0.30" in project["dependencies"]
    assert oldest["torchvision"][:2] == (0, 25) and newest["torchvision"][:2] < (0, 30)


def test_importing_qzoo_under_an_old_torch_fails_with_the_upgrade_named():
    """The check runs at ``import qzoo`` itself (here under a torch that reports 2.9.1), not only when called."""
    script = "import torch; torch.__version__ = '2.9.1'; import qzoo"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "ImportError: qzoo needs torch>=2.10, found torch 2.9.1" in done.stderr
