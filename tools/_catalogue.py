"""qzoo/weights.json and the weights/ folders, shared by the tools that publish entries (and the
machine name they record with their measurements, and the generated tables they write into docs).

Each tool owns a set of entries (``tools/publish.py`` the CIFAR-10 ones, ``tools/imagenet_lite.py``
the EfficientNet-Lite ones) and rewrites only those, keeping the others as they are.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import qzoo
from qzoo import pretrained

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"


def folder_entry(name: str, folder: Path, *, default: bool, unquantized: str | None, license: str) -> dict[str, Any]:
    """The index entry of the qzoo folder ``weights/<name>`` (read from its config.json, loaded once to check it)."""
    config = json.loads((folder / "config.json").read_text())
    model = qzoo.from_pretrained(folder)
    params = sum(p.numel() for p in qzoo.get_model(config["architecture"], **config["kwargs"]).parameters())
    size = (folder / "model.safetensors").stat().st_size
    return {"name": name, "architecture": config["architecture"], "mode": "int8" if qzoo.is_int8(model) else "float",
            "sha256": config["sha256"], "hub_repo": f"qzoo/{name}", "hub_revision": None,
            "backend": config["backend"], "unquantized": unquantized, "kwargs": config["kwargs"],
            "categories": config["categories"], "metrics": config["metrics"], "recipe": config["recipe"],
            "transforms": config["transforms"], "num_params": params, "file_size_mb": round(size / 1e6, 3),
            "license": license, "default": default}


def update_index(entries: list[dict[str, Any]], owns: Callable[[str], bool]) -> None:
    """Replace the index entries ``owns`` claims with ``entries`` (others kept, order: kept first), and
    remove the weights/ folders it claims that no entry names any more."""
    kept = [e for e in json.loads(pretrained.INDEX.read_text()) if not owns(e["name"])] if pretrained.INDEX.is_file() else []
    names = {e["name"] for e in entries}
    for folder in WEIGHTS.iterdir() if WEIGHTS.is_dir() else ():
        if folder.is_dir() and owns(folder.name) and folder.name not in names:
            shutil.rmtree(folder)
    pretrained.INDEX.write_text(json.dumps(kept + entries, indent=2) + "\n")


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name with its family and model numbers (Linux: "AMD EPYC family 26 model 2"), for the
    measurements a tool records.

    Cloud machines often report a bare "AMD EPYC" or "Intel(R) Xeon(R) Processor" for CPUs of different
    generations, whose speeds differ several times over: the numbers tell them apart."""
    fields: dict[str, str] = {}
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().split("\n\n", 1)[0].splitlines():  # the first processor's block
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    return f"{name} family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else name


DEFAULT_ALLOCATOR = "glibc's malloc with its default thresholds"


def allocator() -> str:
    """How this process allocates memory, for the timings a tool records: a preloaded library or glibc's malloc
    settings from the environment (torch fp32 at large batches depends on them: docs/benchmarks.md)."""
    settings = [f"{key}={value}" for key, value in sorted(os.environ.items())
                if key in ("LD_PRELOAD", "GLIBC_TUNABLES") or key.startswith("MALLOC_")]
    return ", ".join(settings) or DEFAULT_ALLOCATOR


def int8_isa() -> str:
    """The int8-relevant instruction sets this CPU reports (Linux's /proc/cpuinfo flags)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    named = {"avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8"}
    return ", ".join(label for flag, label in named.items() if flag in flags) or ("AVX2 without VNNI" if "avx2" in flags
                                                                               else "no AVX2")


def record_table(report: dict[str, Any], table: str, results: Path, doc: Path, markers: tuple[str, str], *,
                 write: bool = True) -> None:
    """Print a tool's ``table``; with ``write``, also save its ``report`` to ``results`` (JSON) and put the table
    into ``doc`` between ``markers``."""
    if write:
        results.write_text(json.dumps(report, indent=2) + "\n")
        doc.write_text(replace_between(doc.read_text(), markers, table))
    print(table)


def replace_between(text: str, markers: tuple[str, str], body: str) -> str:
    """``text`` with what lies between the two marker lines replaced by ``body`` (a generated table)."""
    head, rest = text.split(markers[0], 1)
    return head + markers[0] + "\n" + body + "\n" + markers[1] + rest.split(markers[1], 1)[1]
