"""Model states as safetensors files: float and QAT-prepared states as plain tensors, with a JSON header.

Loading never unpickles. A header records what wrote the file, so a file from another model
or mode is refused before any tensor is copied.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
from torch import Tensor, nn

FORMAT = "qzoo.state"
FORMAT_VERSION = 1


def _version() -> str:
    from . import __version__

    return __version__


def save_state(model: nn.Module, path: str | os.PathLike[str], **metadata: Any) -> Path:
    """Write ``model.state_dict()`` (float or QAT-prepared) to ``path`` as safetensors, atomically.

    ``metadata`` (JSON-serializable) is stored in the header next to the format and qzoo version.
    """
    path = Path(path)
    tensors = {name: value.detach().contiguous().clone() for name, value in model.state_dict().items()
               if isinstance(value, Tensor)}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "qzoo_version": _version(), **metadata}
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    safetensors.torch.save_file(tensors, partial, metadata={"qzoo": json.dumps(header)})
    partial.replace(path)
    return path


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The qzoo header of a safetensors file written by qzoo (no tensor is read)."""
    with safetensors.safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get("qzoo")
    if raw is None:
        raise ValueError(f"{path} is a safetensors file without a qzoo header; it was not written by qzoo")
    return json.loads(raw)


def load_state(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a :func:`save_state` file into ``model``; every key and shape must match."""
    header = read_header(path)
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} holds a {header.get('format')!r} file, not a float/QAT state")
    tensors = safetensors.torch.load_file(str(path))
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, value in tensors.items():
        if value.numel() and expected[name].numel() and value.shape != expected[name].shape:
            raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, the model expects "
                             f"{tuple(expected[name].shape)} (another num_classes or architecture?)")
    model.load_state_dict(tensors)
    return model
