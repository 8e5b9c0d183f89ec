"""Fixtures shared by the test files: private caches, and catalogue/registry changes undone after each test."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import huggingface_hub.constants
import pytest
import torch

from qzoo import pretrained, registry
from qzoo.pretrained import Weights

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 on 2 cores: one thread per worker, for torch here and the processes tests start
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """A private ``$TORCH_HOME``; returns its checkpoint folder (torch.hub's and qzoo's URL cache), not created."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache for this test (huggingface_hub reads these at call time)."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return cache


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    """A private ``$QZOO_CACHE`` (unpacked archives, decoded images)."""
    monkeypatch.setenv("QZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def with_entries(monkeypatch) -> Callable[..., None]:
    """``with_entries(entry, ...)`` adds or replaces catalogue entries for this test only."""

    def add(*entries: Weights) -> None:
        merged = MappingProxyType({**pretrained.catalogue(), **{entry.name: entry for entry in entries}})
        monkeypatch.setattr(pretrained, "catalogue", lambda: merged)

    return add


@pytest.fixture
def isolated_registry(monkeypatch) -> None:
    """Models registered during the test are forgotten after it."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
