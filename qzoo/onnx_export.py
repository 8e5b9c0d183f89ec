"""qzoo int8 models as ONNX, and ONNX Runtime as their execution path (``pip install "qzoo[onnx]"``).

torch's TorchScript-based ONNX exporter writes a converted eager int8 model as QuantizeLinear /
DequantizeLinear pairs around float ops, with the model's own int8 weights, per-channel scales
and zero points (the bias as int32 at input scale x weight scale). ONNX Runtime's graph optimizer
fuses those pairs into its integer kernels (QLinearConv, QLinearAdd, QGemm), so the file runs at
ORT's int8 speed with qzoo's quantization. The newer torch.export-based exporter does not take
eager int8 models.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import quantization
from ._files import write_atomic
from ._tracing import tracing_warnings_silenced
from .data import synthetic_images

OPSET = 17
"""ONNX opset of the exported graph (per-channel QDQ needs 13 or later)."""

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


@contextlib.contextmanager
def _int8_pad_and_slice_exportable() -> Iterator[None]:
    """torch's ONNX symbolics for ``aten::pad`` and ``aten::slice``, made to accept int8 inputs while
    exporting: Dequantize, the float op, Quantize with the input's own scale and zero point (a pad
    with 0.0 is then the zero point, as in torch's int8 pad). torch's exporter has neither for int8;
    EfficientNet-Lite's TensorFlow padding needs both."""
    from torch.onnx import symbolic_helper, symbolic_opset10, symbolic_opset11

    ops = {"aten::pad": symbolic_opset11.pad, "aten::slice": symbolic_opset10.slice}
    for name, symbolic in ops.items():
        torch.onnx.register_custom_op_symbolic(name, symbolic_helper.quantized_args(True)(symbolic), OPSET)
    try:
        yield
    finally:
        for name in ops:
            torch.onnx.unregister_custom_op_symbolic(name, OPSET)


def export_onnx(model: nn.Module, path: str | os.PathLike[str] | None = None, *, example: Tensor | None = None,
                image_size: int = 224) -> bytes:
    """The ONNX (QDQ) file of an int8 ``model`` made for x86/fbgemm; also written to ``path``, atomically.

    Input ``images`` (float32, any batch, height and width the model takes), output ``logits``.
    ``example`` (default: two synthetic images of ``image_size``) is the tracing input.
    """
    backend = quantization.require_int8(model, "export_onnx")
    if backend not in ORT_BACKENDS:
        raise ValueError(f"this model was quantized for {backend!r}, whose 8-bit activations can overflow "
                         "ONNX Runtime's int8 kernels on CPUs without VNNI; quantize it with backend='x86'")
    if importlib.util.find_spec("onnx") is None:  # torch's exporter needs it
        raise ImportError(f"ONNX export needs the onnx package: {_INSTALL}")
    model.eval()
    example = synthetic_images(2, image_size, seed=11) if example is None else example
    buffer = io.BytesIO()
    with (torch.no_grad(), quantization.backend_engine(backend), tracing_warnings_silenced(),
          _int8_pad_and_slice_exportable()):
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})
    data = buffer.getvalue()
    if path is not None:
        write_atomic(path, data)
    return data


class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime session over an exported int8 model, called like the model: images in, logits out.

    ``threads`` sets the intra-op threads (default: ``torch.get_num_threads()``). The pool does not
    spin between calls, so it leaves the cores to the torch work of the same process.
    """

    def __init__(self, onnx_model: bytes | str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        onnxruntime = _onnxruntime()
        self.onnx_model = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(self.onnx_model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: Tensor) -> Tensor:
        quantization.check_int8_input(images)
        (logits,) = self.session.run(None, {self.input_name: images.detach().contiguous().numpy()})
        return torch.from_numpy(logits)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ONNX file (atomically); ``OnnxRuntimeModel(path)`` or any ORT session loads it."""
        return write_atomic(path, self.onnx_model)
