"""torch's TorchScript-based ONNX exporter, kept only to cross-check qzoo's own writer while torch has it.

qzoo wrote its ONNX files with it until issue 17; ``qzoo.export_onnx`` (qzoo's own writer) must give
files that run bit for bit as these do.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

import qzoo
from qzoo.onnx_export import OPSET


@contextlib.contextmanager
def _int8_pad_and_slice_exportable() -> Iterator[None]:
    """torch's symbolics for ``aten::pad`` and ``aten::slice``, made to take int8 inputs (EfficientNet-Lite's
    SAME padding needs both): Dequantize, the float op, Quantize with the input's own scale and zero point."""
    from torch.onnx import symbolic_helper, symbolic_opset10, symbolic_opset11

    ops = {"aten::pad": symbolic_opset11.pad, "aten::slice": symbolic_opset10.slice}
    for name, symbolic in ops.items():
        torch.onnx.register_custom_op_symbolic(name, symbolic_helper.quantized_args(True)(symbolic), OPSET)
    try:
        yield
    finally:
        for name in ops:
            torch.onnx.unregister_custom_op_symbolic(name, OPSET)


def torch_export(model: nn.Module, example: Tensor) -> bytes:
    """The ONNX file torch's TorchScript-based exporter writes for an x86 int8 ``model``, traced on ``example``."""
    buffer = io.BytesIO()
    with (torch.no_grad(), qzoo.quantized_engine("x86"), warnings.catch_warnings(), _int8_pad_and_slice_exportable()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})
    return buffer.getvalue()
