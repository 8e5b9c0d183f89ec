"""qzoo's fastest int8 inference path: a traced, frozen TorchScript graph run under the model's backend.

Freezing inlines the packed weights and the quantization parameters into the graph, which
removes Python module dispatch and per-call attribute lookups. The graph is checked bit for bit
against the eager int8 model before it is returned.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from . import quantization
from .data import synthetic_images


class OptimizedModel(nn.Module):
    """A frozen TorchScript int8 graph that runs under the backend it was packed for.

    A bare TorchScript module follows the process-global quantized engine; this wrapper takes
    the model's own engine for each call (safe from many threads), like qzoo's eager models.
    """

    def __init__(self, graph: torch.jit.ScriptModule, backend: str) -> None:
        super().__init__()
        self.graph = graph
        self.backend = backend

    def forward(self, images: Tensor) -> Tensor:
        quantization.check_int8_input(images)
        with quantization.backend_engine(self.backend):
            return self.graph(images)


def optimize_for_inference(model: nn.Module, example: Tensor | None = None, *, image_size: int = 224) -> OptimizedModel:
    """Trace and freeze an int8 ``model`` into :class:`OptimizedModel`, verified bit-exact against it.

    ``example`` (float32 images, default: two synthetic images of ``image_size``) is used to
    trace and to check; the graph accepts any batch size and the same image sizes the model does.
    Raises ``ValueError`` for a model that is not int8 and ``RuntimeError`` if the graph's outputs
    differ from the eager model's in any bit.
    """
    backend = quantization.model_backend(model)
    if not quantization.is_int8(model) or backend is None:
        raise ValueError("optimize_for_inference takes an int8 model: run qzoo.prepare_ptq, qzoo.calibrate and "
                         "qzoo.convert first (or load one with quantize=True / qzoo.from_pretrained)")
    model.eval()
    example = synthetic_images(2, image_size, seed=11) if example is None else example
    with torch.inference_mode(), quantization.backend_engine(backend), warnings.catch_warnings():
        # torch marks TorchScript deprecated on every call, and the tracer warns that quantization
        # parameters become constants, which freezing wants; the bit-exact check below is the guard
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        graph = torch.jit.freeze(torch.jit.trace(model, example))
        for images in (example, example[:1]):
            if not torch.equal(graph(images), model(images)):
                raise RuntimeError("the optimized graph does not reproduce the eager int8 outputs bit for bit")
    return OptimizedModel(graph, backend)
