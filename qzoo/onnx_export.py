"""qzoo int8 models as ONNX, and ONNX Runtime as their execution path (``pip install "qzoo[onnx]"``).

:mod:`qzoo.onnx_writer` writes a converted int8 model as QuantizeLinear / DequantizeLinear pairs
around float ops, with the model's own int8 weights, per-channel scales and zero points (the bias
as int32 at input scale x weight scale), without ``torch.onnx``. ONNX Runtime's graph optimizer
fuses those pairs into its integer kernels (QLinearConv, QLinearAdd, QGemm), so the file runs at
ORT's int8 speed with qzoo's quantization. Every family exports, ShuffleNetV2 included (torch's
TorchScript-based exporter fails on its split); the newer torch.export-based exporter does not
take eager int8 models.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import hub, onnx_writer, quantization, registry, serialization
from ._files import write_atomic
from ._record import ModelRecord, record_of
from .onnx_writer import OPSET

__all__ = ["OPSET", "ORT_BACKENDS", "OnnxRuntimeModel", "available", "export_onnx", "int8_onnx", "onnx_from_pretrained"]

ORT_BACKENDS: tuple[str, ...] = ("x86", "fbgemm")
"""Backends whose int8 models ONNX Runtime runs as they were calibrated: their 7-bit activations
cannot overflow the int16 pair sums of ORT's u8 x s8 kernels on CPUs without VNNI."""

_INSTALL = 'pip install "qzoo[onnx]"'


def available() -> bool:
    """Whether the ONNX Runtime path can run here (onnxruntime and onnx installed)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"the ONNX Runtime path needs onnxruntime: {_INSTALL}") from error
    return onnxruntime


def int8_onnx(record: ModelRecord, tensors: dict[str, Tensor], entries: dict[str, Any]) -> bytes:
    """The ONNX (QDQ) file of the int8 model ``record`` describes, from its int8 state as plain tensors
    (:func:`qzoo.serialization.int8_tensors`): no quantized tensor is made on the way."""
    if record.backend not in ORT_BACKENDS:
        raise ValueError(f"this model was quantized for {record.backend!r}, whose 8-bit activations can overflow "
                         "ONNX Runtime's int8 kernels on CPUs without VNNI; quantize it with backend='x86'")
    if record.architecture is None:
        raise ValueError("export_onnx writes models built by qzoo's factories (qzoo.list_models()); this one has "
                         "no architecture in qzoo.model_record(model): build it with qzoo.get_model(name) or a factory")
    if importlib.util.find_spec("onnx") is None:
        raise ImportError(f"ONNX export needs the onnx package: {_INSTALL}")
    skeleton = registry.get_model(record.architecture, **record.kwargs)
    quantization.prepare_ptq(skeleton, record.backend, float_layers=record.float_layers)
    return onnx_writer.write_onnx(skeleton, tensors, entries)


def export_onnx(model: nn.Module, path: str | os.PathLike[str] | None = None) -> bytes:
    """The ONNX (QDQ) file of an int8 ``model`` made for x86/fbgemm; also written to ``path``, atomically.

    Input ``images`` (float32, any batch, height and width the model takes), output ``logits``.
    Written by :mod:`qzoo.onnx_writer`; the file runs bit for bit as torch's TorchScript-based exporter's did
    (MNASNet's global mean aside: qzoo's runs on int8, a code apart here and there).
    """
    quantization.require_int8(model, "export_onnx")
    tensors, entries = serialization.int8_tensors(model.state_dict())
    data = int8_onnx(record_of(model), tensors, entries)
    if path is not None:
        write_atomic(path, data)
    return data


def onnx_from_pretrained(source: str | os.PathLike[str], path: str | os.PathLike[str] | None = None, *,
                         revision: str | None = None, progress: bool = True) -> bytes:
    """The ONNX file of an int8 qzoo folder (local, weights entry name or hub repo id), read as plain
    tensors: no int8 model is built and no quantized tensor made, so it runs with a torch that has no
    quantized types (the same file as ``export_onnx(qzoo.from_pretrained(source))``). Also written to
    ``path``, atomically."""
    record, tensors, entries = hub.int8_parts(source, revision=revision, progress=progress)
    data = int8_onnx(record, tensors, entries)
    if path is not None:
        write_atomic(path, data)
    return data


class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime session over an exported int8 model, called like the model: images in, logits out.

    ``threads`` sets the intra-op threads (default: ``torch.get_num_threads()``). The pool does not
    spin between calls, so it leaves the cores to the torch work of the same process. ``copy.deepcopy``
    and pickling (``torch.save``, worker processes) carry the ONNX file and open a new session from it.
    """

    def __init__(self, onnx_model: bytes | str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        onnxruntime = _onnxruntime()
        self.onnx_model = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()
        self.threads = threads
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(self.onnx_model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __reduce__(self) -> tuple[Any, ...]:
        return OnnxRuntimeModel, (self.onnx_model, self.threads)

    def forward(self, images: Tensor) -> Tensor:
        quantization.check_int8_input(images)
        (logits,) = self.session.run(None, {self.input_name: images.detach().contiguous().numpy()})
        return torch.from_numpy(logits)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ONNX file (atomically); ``OnnxRuntimeModel(path)`` or any ORT session loads it."""
        return write_atomic(path, self.onnx_model)
