"""qzoo's fast int8 inference paths: a frozen TorchScript graph (bit-exact), or ONNX Runtime.

``runtime="torch"``: freezing inlines the packed weights and the quantization parameters into a
traced graph, which removes Python module dispatch and per-call attribute lookups; the graph is
checked bit for bit against the eager int8 model before it is returned.

``runtime="onnxruntime"`` (``pip install "qzoo[onnx]"``): the int8 model is exported as a QDQ
ONNX graph that carries qzoo's own int8 weights, scales and zero points (:mod:`qzoo.onnx_export`),
and ONNX Runtime runs it with its fused integer kernels. ORT rounds some requantizations the other
way from fbgemm (ties, float accumulation), so its outputs are not the eager model's bits: on the
trained CIFAR-10 int8 models top-1 agrees on 96-99% of images and accuracy moves by <= 0.35 points
(tests/test_onnx_export.py; README). Random-weight networks amplify those one-step differences.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from . import quantization
from ._tracing import tracing_warnings_silenced
from .data import synthetic_images
from .onnx_export import OnnxRuntimeModel, export_onnx


class OptimizedModel(quantization.NotPickled, nn.Module):
    """A frozen TorchScript int8 graph that runs under the backend it was packed for.

    A bare TorchScript module follows the process-global quantized engine; this wrapper takes
    the model's own engine for each call (safe from many threads), like qzoo's eager models.
    """

    def __init__(self, graph: torch.jit.ScriptModule, backend: str) -> None:
        super().__init__()
        self.graph = graph
        self.backend = backend

    def not_pickled_reason(self) -> str:
        return ("an optimized TorchScript model is not pickled: write it with `qzoo export` "
                "(qzoo.workflow.run_export) or torch.jit.save(model.graph, path), and run the loaded graph "
                f"under qzoo.quantized_engine({self.backend!r})")

    def forward(self, images: Tensor) -> Tensor:
        quantization.check_int8_input(images)
        with quantization.backend_engine(self.backend):
            return self.graph(images)


def optimize_for_inference(model: nn.Module, example: Tensor | None = None, *, image_size: int = 224,
                           runtime: Literal["torch", "onnxruntime"] = "torch",
                           threads: int | None = None) -> nn.Module:
    """qzoo's fast path for an int8 ``model``: :class:`OptimizedModel` or, with ``runtime="onnxruntime"``,
    :class:`qzoo.OnnxRuntimeModel`.

    ``example`` (float32 images, default: one synthetic image of ``image_size``) is used to trace and
    to check; the result accepts any batch size and the image sizes the model does, but pass a batch
    of the size you will serve, under the thread count you will serve with: torch's x86 engine keeps
    its fast path (oneDNN's cached primitive) for the first input shape and thread count each int8
    conv sees, and with 2 threads or more runs other shapes several times slower (docs/benchmarks.md).
    The graph shares ``model``'s packed weights, so the trace is their first call if the model never ran.
    ``threads`` sets ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
    Raises ``ValueError`` for a model that is not int8, and ``RuntimeError`` if the torch graph's
    outputs differ from the eager model's in any bit, or ORT's are not finite logits of the same shape.
    """
    if runtime not in ("torch", "onnxruntime"):
        raise ValueError(f"runtime={runtime!r}: choose 'torch' (bit-exact TorchScript) or 'onnxruntime'")
    backend = quantization.require_int8(model, "optimize_for_inference")
    model.eval()
    example = synthetic_images(1, image_size, seed=11) if example is None else example
    if runtime == "onnxruntime":
        optimized: nn.Module = OnnxRuntimeModel(export_onnx(model), threads=threads)
    else:
        with torch.inference_mode(), quantization.backend_engine(backend), tracing_warnings_silenced():
            optimized = OptimizedModel(torch.jit.freeze(torch.jit.trace(model, example)), backend)
    for images in (example, example[:1]) if len(example) > 1 else (example,):  # the example, and one image alone
        with torch.inference_mode():
            with quantization.backend_engine(backend):
                expected = model(images)
            actual = optimized(images)
        if runtime == "torch":
            if not torch.equal(actual, expected):
                raise RuntimeError("the optimized graph does not reproduce the eager int8 outputs bit for bit")
        elif actual.shape != expected.shape or not torch.isfinite(actual).all():
            raise RuntimeError(f"ONNX Runtime returned {tuple(actual.shape)} (finite: {bool(torch.isfinite(actual).all())}) "
                               f"where the eager model gives {tuple(expected.shape)}: use runtime='torch'")
    return optimized
