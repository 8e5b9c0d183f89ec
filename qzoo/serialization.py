"""Model states as safetensors files, for float, QAT-prepared and converted int8 models.

Loading never unpickles. Every file carries a JSON header (safetensors metadata key ``qzoo``)
recording what wrote it, so a file from another model or mode is refused before any tensor
is copied.

The int8 layout (``format: qzoo.int8``) stores what a converted model's ``state_dict`` holds
in packed or quantized form as plain tensors, each described in the header's ``entries``:

=====================  =========================================================================
state_dict value       tensors in the file (``K`` is the state_dict key)
=====================  =========================================================================
quantized tensor       ``K`` (int8/uint8/int32 integer values), ``K:scale`` (float64),
                       ``K:zero_point`` (int64); the entry gives dtype, qscheme and channel axis
packed Linear params   ``K:weight`` (a quantized tensor as above) and ``K:bias`` (float32, if any)
dtype                  no tensor; the entry gives its name (``torch.qint8``)
plain tensor           ``K`` as it is (float biases, activation scales and zero points)
=====================  =========================================================================

The header also names the architecture, its keyword arguments, the backend the int8 weights
were packed for, the qzoo version, and ``content_sha256``: a digest of the header and every
tensor byte, so a changed byte anywhere is caught at load time, not in wrong logits.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from . import quantization
from ._files import IntegrityError, atomic_path, write_atomic
from ._record import record_of
from ._version import __version__

__all__ = ["IntegrityError", "write_atomic", "save_state", "load_state", "read_header", "save_int8", "read_int8",
           "read_int8_tensors", "int8_tensors", "is_qzoo_file",
           "load_int8_state", "state_digest", "stored_values", "read_torch_checkpoint"]

FORMAT = "qzoo.state"
INT8_FORMAT = "qzoo.int8"
FORMAT_VERSION = 1
_QUANTIZED_DTYPES = {torch.qint8: torch.int8, torch.quint8: torch.uint8, torch.qint32: torch.int32}
_DTYPES = {str(dtype): dtype for dtype in (*_QUANTIZED_DTYPES, torch.float16, torch.float32)}


def save_state(model: nn.Module, path: str | os.PathLike[str], **metadata: Any) -> Path:
    """Write ``model.state_dict()`` (float or QAT-prepared) to ``path`` as safetensors, atomically.

    ``metadata`` (JSON-serializable) is stored in the header next to the format and qzoo version.
    """
    path = Path(path)
    tensors = {name: value.detach().contiguous().clone() for name, value in model.state_dict().items()
               if isinstance(value, Tensor)}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "qzoo_version": __version__,
              "prepared": _prepared(model), **metadata}
    with atomic_path(path) as partial:
        safetensors.torch.save_file(tensors, partial, metadata={"qzoo": json.dumps(header)})
    return path


def _prepared(model: nn.Module) -> str | None:
    """``"qat"`` or ``"ptq"`` for a prepared model, ``None`` for a float one."""
    mode = record_of(model).mode
    return mode if mode in ("ptq", "qat") else None


def _describe(prepared: str | None) -> str:
    return f"{prepared.upper()}-prepared" if prepared else "float"


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The qzoo header of a safetensors file written by qzoo (no tensor is read)."""
    with safetensors.safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get("qzoo")
    if raw is None:
        raise ValueError(f"{path} is a safetensors file without a qzoo header; it was not written by qzoo")
    return json.loads(raw)


def is_qzoo_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a safetensors file qzoo wrote (its header names one of qzoo's formats)."""
    try:
        return read_header(path).get("format") in (FORMAT, INT8_FORMAT)
    except (safetensors.SafetensorError, OSError, ValueError, AttributeError):
        return False


def stored_values(path: str | os.PathLike[str]) -> int:
    """How many numbers the safetensors file at ``path`` holds, read from its header alone."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            return sum(int(torch.Size(handle.get_slice(key).get_shape()).numel()) for key in handle.keys())
    except (safetensors.SafetensorError, OSError) as error:
        raise IntegrityError(f"{path} is not a readable safetensors file ({error}); download it again") from None


def load_state(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a :func:`save_state` file into ``model``; every key and shape must match."""
    header = read_header(path)
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} holds a {header.get('format')!r} file, not a float/QAT state")
    if header.get("prepared") != _prepared(model):
        raise ValueError(f"{path} holds a {_describe(header.get('prepared'))} state but the model is "
                         f"{_describe(_prepared(model))}: build it with "
                         f"{'prepare=' + repr(header['prepared']) if header.get('prepared') else 'no prepare='} first")
    expected = model.state_dict()
    with safetensors.safe_open(str(path), framework="pt") as handle:  # keys and shapes before any tensor is read
        shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    parameters = dict(model.named_parameters())  # observer buffers legitimately change shape on load
    for name, shape in shapes.items():
        if name in parameters and shape != tuple(expected[name].shape):
            raise ValueError(f"{path}: {name} has shape {shape}, the model expects "
                             f"{tuple(expected[name].shape)} (another num_classes or architecture?)")
    model.load_state_dict(safetensors.torch.load_file(str(path)))
    return model


# ----------------------------------------------------------------------------- int8


def _split_quantized(key: str, value: Tensor, tensors: dict[str, Tensor]) -> dict[str, Any]:
    tensors[key] = value.int_repr().contiguous()
    if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        tensors[f"{key}:scale"] = torch.tensor(value.q_scale(), dtype=torch.float64)
        tensors[f"{key}:zero_point"] = torch.tensor(value.q_zero_point(), dtype=torch.int64)
        return {"kind": "quantized", "dtype": str(value.dtype), "qscheme": "per_tensor_affine"}
    if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        tensors[f"{key}:scale"] = _narrowest(value.q_per_channel_scales().to(torch.float64), torch.float32)
        tensors[f"{key}:zero_point"] = _narrowest(value.q_per_channel_zero_points().to(torch.int64), torch.int32)
        return {"kind": "quantized", "dtype": str(value.dtype), "qscheme": "per_channel_affine",
                "axis": int(value.q_per_channel_axis())}
    raise ValueError(f"{key}: quantization scheme {value.qscheme()} has no safetensors layout in qzoo")


def _narrowest(values: Tensor, narrow: torch.dtype) -> Tensor:
    """``values`` in the ``narrow`` dtype when that is lossless (per-channel scales are float32 values
    held as float64 by torch), else unchanged: smaller files, same bits after loading."""
    narrowed = values.to(narrow)
    return (narrowed if torch.equal(narrowed.to(values.dtype), values) else values).contiguous()


def _join_quantized(key: str, spec: dict[str, Any], tensors: dict[str, Tensor]) -> Tensor:
    values, scale, zero_point = tensors[key], tensors[f"{key}:scale"], tensors[f"{key}:zero_point"]
    if scale.dtype not in (torch.float32, torch.float64) or zero_point.dtype not in (torch.int32, torch.int64):
        raise IntegrityError(f"{key}: scales stored as {scale.dtype} and zero points as {zero_point.dtype}; "
                             "qzoo writes float32/float64 and int32/int64")
    scale, zero_point = scale.to(torch.float64), zero_point.to(torch.int64)
    dtype = _DTYPES.get(spec.get("dtype", ""))
    if dtype not in _QUANTIZED_DTYPES or values.dtype != _QUANTIZED_DTYPES[dtype]:
        raise IntegrityError(f"{key}: stored as {values.dtype}, header says {spec.get('dtype')}")
    limits = torch.iinfo(values.dtype)
    if not (torch.isfinite(scale).all() and (scale > 0).all()):
        raise IntegrityError(f"{key}: a quantization scale is not a finite positive number")
    if not ((zero_point >= limits.min) & (zero_point <= limits.max)).all():
        raise IntegrityError(f"{key}: a zero point lies outside the {values.dtype} range")
    if spec.get("qscheme") == "per_tensor_affine":
        if scale.numel() != 1 or zero_point.numel() != 1:
            raise IntegrityError(f"{key}: per-tensor quantization with {scale.numel()} scales")
        with quantization.routine_warnings_silenced():
            return torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero_point))
    if spec.get("qscheme") == "per_channel_affine":
        axis = int(spec["axis"])
        if not (0 <= axis < values.ndim and scale.numel() == zero_point.numel() == values.shape[axis]):
            raise IntegrityError(f"{key}: {scale.numel()} scales for axis {axis} of shape {tuple(values.shape)}")
        with quantization.routine_warnings_silenced():
            return torch._make_per_channel_quantized_tensor(values, scale, zero_point, axis)
    raise IntegrityError(f"{key}: unknown quantization scheme {spec.get('qscheme')!r}")


def int8_tensors(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split a converted model's ``state_dict`` into plain tensors and their ``entries`` descriptions."""
    tensors: dict[str, Tensor] = {}
    entries: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.dtype):
            entries[key] = {"kind": "dtype", "value": str(value)}
        elif isinstance(value, tuple):  # quantized Linear's packed (weight, bias)
            weight, bias = value
            entries[key] = {"kind": "linear_packed", "weight": _split_quantized(f"{key}:weight", weight, tensors),
                            "bias": bias is not None}
            if bias is not None:
                tensors[f"{key}:bias"] = bias.detach().contiguous()
        elif isinstance(value, Tensor) and value.is_quantized:
            entries[key] = _split_quantized(key, value, tensors)
        elif isinstance(value, Tensor):
            tensors[key] = value.detach().contiguous()
            entries[key] = {"kind": "tensor"}
        else:
            raise ValueError(f"{key}: a {type(value).__name__} in the state_dict has no safetensors layout")
    return tensors, entries


def _content_digest(header: dict[str, Any], tensors: dict[str, Tensor]) -> str:
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for key in sorted(tensors):
        value = tensors[key]
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def state_digest(model: nn.Module) -> str:
    """sha256 of every tensor of a float, prepared or int8 model's state: equal digests, equal models."""
    state = model.state_dict()
    tensors, entries = int8_tensors(state)
    return _content_digest({"entries": entries}, tensors)


def save_int8(model: nn.Module, path: str | os.PathLike[str], *, architecture: str, kwargs: dict[str, Any],
              backend: str, **metadata: Any) -> Path:
    """Write a converted int8 model as safetensors (layout in the module docstring), atomically."""
    path = Path(path)
    tensors, entries = int8_tensors(model.state_dict())
    header = {"format": INT8_FORMAT, "format_version": FORMAT_VERSION, "qzoo_version": __version__,
              "architecture": architecture, "kwargs": kwargs, "backend": backend, **metadata, "entries": entries}
    header["content_sha256"] = _content_digest(header, tensors)
    with atomic_path(path) as partial:
        safetensors.torch.save_file(tensors, partial, metadata={"qzoo": json.dumps(header)})
    return path


def read_int8_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Any]]:
    """Read and verify an int8 file as plain tensors: its header, the tensors, and their ``entries``
    (the layout in the module docstring). Makes no quantized tensor, so it runs where torch has none.

    Raises :class:`IntegrityError` for a truncated or changed file, or one that is not qzoo int8.
    """
    try:
        header = read_header(path)
        tensors = safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IntegrityError(f"{path} is not a readable safetensors file ({error}); download it again") from None
    if header.get("format") != INT8_FORMAT:
        raise ValueError(f"{path} holds a {header.get('format')!r} file, not qzoo int8 weights")
    claimed = header.pop("content_sha256", None)
    if claimed != _content_digest(header, tensors):
        raise IntegrityError(f"{path}: content digest mismatch (expected {claimed}); the file was changed "
                             "or damaged after it was written: download or export it again")
    entries = header.get("entries")
    if not isinstance(entries, dict):
        raise IntegrityError(f"{path}: header has no entries table")
    return header, tensors, entries


def read_int8(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and verify an int8 file: its header and the rebuilt ``state_dict`` (quantized tensors).

    Raises :class:`IntegrityError` for a truncated or changed file, or one that is not qzoo int8.
    """
    header, tensors, entries = read_int8_tensors(path)
    state: dict[str, Any] = {}
    key = None
    try:
        for key, spec in entries.items():
            kind = spec.get("kind")
            if kind == "tensor":
                state[key] = tensors[key]
            elif kind == "quantized":
                state[key] = _join_quantized(key, spec, tensors)
            elif kind == "linear_packed":
                bias = tensors[f"{key}:bias"] if spec.get("bias") else None
                state[key] = (_join_quantized(f"{key}:weight", spec["weight"], tensors), bias)
            elif kind == "dtype" and spec.get("value") in _DTYPES:
                state[key] = _DTYPES[spec["value"]]
            else:
                raise IntegrityError(f"{path}: entry {key} has unknown kind {kind!r}")
    except IntegrityError:
        raise
    except KeyError as missing:
        raise IntegrityError(f"{path}: tensor {missing} named in the header is missing") from None
    except (TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise IntegrityError(f"{path}: header entry {key} cannot be rebuilt ({error}); the file was not "
                             "written by qzoo.save_pretrained or was edited: export it again") from None
    return header, state


def load_int8_state(model: nn.Module, state: dict[str, Any], source: str) -> nn.Module:
    """Load a :func:`read_int8` state into an int8 model of the same structure, after checking keys and shapes.

    Quantized modules read their packed parameters according to module version metadata:
    the state's own (a torch checkpoint) or else the target's (a qzoo file, rebuilt by this version).
    """
    reference = model.state_dict()
    _check_int8_state(state, reference, source)
    versioned = OrderedDict(state)
    versioned._metadata = getattr(state, "_metadata", reference._metadata)  # type: ignore[attr-defined]
    model.load_state_dict(versioned)
    return model


def _signature(value: Any) -> tuple[Any, ...]:
    """What a state entry must agree on with the model's: kind, shape and dtype (bias too, when packed)."""
    if isinstance(value, tuple):  # quantized Linear's packed (weight, bias)
        return ("packed", *_signature(value[0])[1:], None if value[1] is None else _signature(value[1]))
    if isinstance(value, Tensor):
        return "tensor", tuple(value.shape), str(value.dtype)
    return type(value).__name__, None, str(value)


def _check_int8_state(state: dict[str, Any], reference: dict[str, Any], source: str) -> None:
    missing, unexpected = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
    if missing or unexpected:
        raise ValueError(f"{source} does not fit this model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for key, value in state.items():
        got, want = _signature(value), _signature(reference[key])
        if got[0] == want[0] and got[1] != want[1]:
            raise ValueError(f"{source}: {key} has shape {got[1]}, the model expects {want[1]} "
                             "(another num_classes or architecture?)")
        if got != want:
            raise ValueError(f"{source}: {key} holds {got}, the model expects {want}")

def read_torch_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A verified torch checkpoint's state_dict (torchvision's files), read with ``torch.load(weights_only=True)``."""
    try:
        with warnings.catch_warnings():  # torch's own storage internals, raised by every quantized checkpoint
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused something: never soften that into another error
        raise
    except Exception as error:  # a hash-verified file that torch cannot read is still damaged input
        raise IntegrityError(f"{path} could not be read as a checkpoint ({error}); delete it and load again") from None
