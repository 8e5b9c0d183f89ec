"""The PT2E flow (experimental): qzoo's float models quantized through ``torch.export`` and torchao.

``qzoo.quantize(model, data, flow="pt2e")`` and ``qzoo.prepare_qat(model, flow="pt2e", example=...)``
capture the unchanged float model with ``torch.export`` (batch size declared dynamic), annotate it
with torchao's ``X86InductorQuantizer``, calibrate or train, ``convert_pt2e``, and hand the result
to inductor with freezing on, which fuses the quantize/dequantize patterns into oneDNN int8
kernels. Without freezing inductor keeps them as float arithmetic, as slow as fp32
(docs/pt2e.md). The eager flow stays qzoo's default: its int8 files, ONNX export and bit-exact
fast path rest on it; this flow is the one that outlives ``torch.ao.quantization``.

Needs ``pip install "qzoo[pt2e]"`` (torchao); nothing here imports torchao until it is used.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import threading
import types
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from . import quantization
from .data import calibration_batches
from .requirements import check_pt2e_torch

__all__ = ["Pt2eModel", "Pt2eQatModel", "check_flow", "convert", "prepare_qat", "quantize", "torchao_available"]

EXTRA = 'pip install "qzoo[pt2e]"'
"""The install command that brings torchao, named by every error about its absence."""

# torch logs these on every correct use (importing torchao; compiling on a CUDA build without a GPU)
_ROUTINE_LOGGERS = ("torch.utils._pytree", "torch.utils.cpp_extension")
# inductor's own oneDNN lowering copies a tensor in the way it warns against, once per conv
_ROUTINE_WARNINGS = ((UserWarning, r"To copy construct from a tensor", r"torch\._inductor"),)

_FREEZING_LOCK = threading.Lock()
_FREEZING_USERS = 0
_FREEZING_BEFORE = False


def torchao_available() -> bool:
    """Whether torchao, which the PT2E flow needs, can be imported."""
    return importlib.util.find_spec("torchao") is not None


@contextlib.contextmanager
def _routine_noise_silenced() -> Iterator[None]:
    """Hide only what torch and torchao log or warn on every correct use of this flow."""
    loggers = [logging.getLogger(name) for name in _ROUTINE_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category, message, module in _ROUTINE_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category, module=module)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _torchao() -> types.SimpleNamespace:
    """torchao's PT2E entry points, or an ``ImportError`` that names the extra to install."""
    check_pt2e_torch()
    try:
        with _routine_noise_silenced():
            from torchao.quantization.pt2e import (
                disable_observer,
                enable_observer,
                move_exported_model_to_eval,
                move_exported_model_to_train,
            )
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer
    except ImportError as error:
        raise ImportError(f"the PT2E flow needs torchao, which is not installed: {EXTRA}") from error
    return types.SimpleNamespace(
        convert_pt2e=convert_pt2e, prepare_pt2e=prepare_pt2e, prepare_qat_pt2e=prepare_qat_pt2e,
        to_eval=move_exported_model_to_eval, to_train=move_exported_model_to_train,
        enable_observer=enable_observer, disable_observer=disable_observer,
        quantizer=lambda qat: x86_inductor_quantizer.X86InductorQuantizer().set_global(
            x86_inductor_quantizer.get_default_x86_inductor_quantization_config(is_qat=qat)))


@contextlib.contextmanager
def _inductor_freezing() -> Iterator[None]:
    """``torch._inductor.config.freezing`` on while any thread is inside, restored after the last leaves.

    Freezing is what lowers PT2E's quantize/dequantize patterns to int8 kernels; inductor reads
    it at compile time, which happens inside a call (first call, each new batch size), and
    ``torch.compile(options={"freezing": True})`` does not reach that pass (torch 2.14: the conv
    prepack fails on fake tensors), so it is set around the call instead.
    """
    global _FREEZING_USERS, _FREEZING_BEFORE
    import torch._inductor.config as inductor_config

    with _FREEZING_LOCK:
        if _FREEZING_USERS == 0:
            _FREEZING_BEFORE = inductor_config.freezing
            inductor_config.freezing = True
        _FREEZING_USERS += 1
    try:
        yield
    finally:
        with _FREEZING_LOCK:
            _FREEZING_USERS -= 1
            if _FREEZING_USERS == 0:
                inductor_config.freezing = _FREEZING_BEFORE


def _check_images(images: Any, image_shape: tuple[int, ...], what: str) -> None:
    """Refuse anything but a float32 CPU batch of the image size the graph was captured at."""
    quantization.check_int8_input(images)
    if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != image_shape:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{what} takes batches of shape (N, {', '.join(map(str, image_shape))}), got {shape}: "
                         "the PT2E graph is captured at one image size (any batch size); "
                         "quantize again with images of the size you will run")


def _check_float(model: nn.Module, step: str) -> None:
    """Refuse a model that eager-mode quantization already prepared or converted."""
    if quantization.fused_mode(model) is not None or any(quantization.is_observer(m) for m in model.modules()) \
            or quantization.is_int8(model):
        raise ValueError(f"{step}: flow='pt2e' takes the float model as the factory returns it "
                         "(not fused, prepared or converted by the eager flow); build a fresh one")
    if isinstance(model, (Pt2eModel, Pt2eQatModel)):
        raise ValueError(f"{step}: this model already went through the PT2E flow; start from the float model")


def check_flow(flow: str, step: str, backend: str, **unsupported: bool) -> bool:
    """Whether ``flow`` is ``"pt2e"`` (else ``"eager"``); refuses a flow's misspelling, and any option
    of the eager flow that PT2E has no counterpart for (``unsupported`` maps its name to whether it was set)."""
    if flow not in ("eager", "pt2e"):
        raise ValueError(f"{step}: flow={flow!r}; choose 'eager' (qzoo's default) or 'pt2e' (torchao, experimental)")
    if flow == "eager":
        return False
    if backend != "x86":
        raise ValueError(f"{step}: flow='pt2e' quantizes for x86 CPUs (X86InductorQuantizer); "
                         f"backend={backend!r} exists only in the eager flow")
    options = [name for name, given in unsupported.items() if given]
    if options:
        raise ValueError(f"{step}: {', '.join(options)} belong to the eager flow; flow='pt2e' uses "
                         "X86InductorQuantizer's own scheme (per-channel int8 weights, uint8 activations)")
    return True


def _capture(model: nn.Module, example: Tensor, qat: bool, step: str) -> torch.fx.GraphModule:
    """``torch.export`` of ``model`` with a dynamic batch, annotated for int8 by X86InductorQuantizer."""
    _check_float(model, step)
    ao = _torchao()
    example = example if len(example) >= 2 else example.repeat(2, 1, 1, 1)  # batch 1 would be specialised
    was_training = model.training
    model.train(qat)
    try:
        with _routine_noise_silenced():
            batch = torch.export.Dim("batch", min=1)
            graph = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    finally:
        model.train(was_training)
    _refuse_ceil_mode_pooling(graph, step)
    try:
        with _routine_noise_silenced():
            prepared = (ao.prepare_qat_pt2e if qat else ao.prepare_pt2e)(graph, ao.quantizer(qat))
    except Exception as error:
        if "more than one output node" in str(error):
            raise ValueError(f"{step}: a module object is called at more than one place in forward (as torchvision's "
                             "BasicBlock reuses one ReLU), which PT2E's annotation cannot split; give each use "
                             "its own module, as qzoo's Quantizable* models do") from error
        raise
    if not any(_is_observer_node(node) for node in prepared.graph.nodes):
        raise RuntimeError(f"{step}: X86InductorQuantizer annotated nothing in this model, so its int8 version "
                           "would be the float model; check that it has Conv2d or Linear layers and that torchao "
                           "matches this torch (torchao's compatibility table)")
    return prepared


def _refuse_ceil_mode_pooling(graph: torch.fx.GraphModule, step: str) -> None:
    """Refuse a max pooling with ``ceil_mode=True``: inductor's int8 lowering of it (torch 2.14.1 and
    2.15.0, measured) ignores ``ceil_mode`` and returns a smaller map, which a later adaptive pooling
    hides (GoogLeNet's compiled int8 output then differs from its own converted graph by 155 %)."""
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target in (torch.ops.aten.max_pool2d.default,
                                                          torch.ops.aten.max_pool2d_with_indices.default):
            ceil_mode = node.args[5] if len(node.args) > 5 else node.kwargs.get("ceil_mode", False)
            if ceil_mode:
                stack = node.meta.get("nn_module_stack") or {}
                where = list(stack.values())[-1][0] if stack else node.name
                raise NotImplementedError(
                    f"{step}: {where} is a max pooling with ceil_mode=True, which inductor's int8 kernels compute as if ceil_mode "
                    "were False, silently (docs/pt2e.md has the reproducer); quantize this model with the eager "
                    "flow (the default)")


def _is_observer_node(node: torch.fx.Node) -> bool:
    """Whether ``node`` calls an observer or fake-quant module that prepare inserted."""
    return node.op == "call_module" and str(node.target).startswith("activation_post_process_")


NOT_SAVED = ("a PT2E model is not saved or pickled (it holds a captured graph and, once converted, inductor's "
             "compiled code): save the float model (qzoo.save_pretrained) and run qzoo.quantize(..., flow='pt2e') "
             "after loading it, or use the eager flow (the default), whose int8 models save")


class _Unsaved(quantization.NotPickled):
    """Refuse pickling (torch.save) with :data:`NOT_SAVED`; ``qzoo.save_pretrained`` reads the same reason."""

    qzoo_not_saved = NOT_SAVED

    def not_pickled_reason(self) -> str:
        return NOT_SAVED


class Pt2eModel(_Unsaved, nn.Module):
    """An int8 model of the PT2E flow: torchao's converted graph, run by inductor with freezing.

    Takes any batch size at the image size it was calibrated at. The first call, and the first
    call at each new batch size, compiles (seconds); later calls run oneDNN's int8 kernels.
    ``graph`` is the converted ``torch.fx.GraphModule`` (quantize/dequantize ops around float ones).
    """

    def __init__(self, graph: torch.fx.GraphModule, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.graph = graph
        self.image_shape = image_shape
        # kept out of the module tree, or state_dict() would list every tensor twice
        self.__dict__["_compiled"] = torch.compile(graph, dynamic=False)
        self.training = False

    def train(self, mode: bool = True) -> Pt2eModel:
        """Stays in eval mode (an exported graph cannot be switched; int8 does not train)."""
        if mode:
            raise RuntimeError("a PT2E int8 model does not train: fine-tune the model of "
                               "qzoo.prepare_qat(model, flow='pt2e', example=...) before qzoo.convert")
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Pt2eModel:
        """A copy of the graph, compiled anew (a deep copy of the compiled module would be the bare graph, which
        runs torch's reference ops instead of inductor's int8 kernels and gives other logits)."""
        copied = Pt2eModel(copy.deepcopy(self.graph, memo), self.image_shape)
        memo[id(self)] = copied
        return copied

    def forward(self, images: Tensor) -> Tensor:
        _check_images(images, self.image_shape, "this PT2E int8 model")
        with torch.no_grad(), _inductor_freezing(), _routine_noise_silenced():
            return self._compiled(images)


class Pt2eQatModel(_Unsaved, nn.Module):
    """A float model prepared by PT2E for QAT: train it like any module, then :func:`qzoo.convert`.

    ``train()`` and ``eval()`` switch the captured graph's BatchNorm and dropout the way
    torchao requires (an exported graph cannot be switched by ``nn.Module.train``); ``eval()``
    also stops the fake-quant observers, so evaluation data never moves the int8 ranges, and
    ``train()`` resumes them.
    """

    def __init__(self, graph: torch.fx.GraphModule, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.graph = graph
        self.image_shape = image_shape

    def forward(self, images: Tensor) -> Tensor:
        _check_images(images, self.image_shape, "this PT2E QAT model")
        return self.graph(images)

    def train(self, mode: bool = True) -> Pt2eQatModel:
        ao = _torchao()
        (ao.to_train if mode else ao.to_eval)(self.graph)
        self.graph.apply(ao.enable_observer if mode else ao.disable_observer)
        self.training = mode
        return self


def quantize(model: nn.Module, data: Iterable[Any], *, num_batches: int | None = None,
             progress: bool = True) -> Pt2eModel:
    """PTQ of a float ``model`` through PT2E: capture at the first batch's size, calibrate on ``data``, convert."""
    _torchao()  # before any work: a missing extra or an old torch is named at once
    batches = calibration_batches(data, num_batches, progress=progress)
    first = next(batches)  # an empty ``data`` raises here, naming the fix
    image_shape = tuple(first.shape[1:])
    _check_images(first, image_shape, "calibration")
    prepared = _capture(model, first, qat=False, step="quantize")
    with torch.no_grad(), _routine_noise_silenced():
        prepared(first)
        for images in batches:
            _check_images(images, image_shape, "calibration")
            prepared(images)
        return Pt2eModel(_torchao().convert_pt2e(prepared), image_shape)


def prepare_qat(model: nn.Module, example: Tensor | None) -> Pt2eQatModel:
    """A float ``model`` captured at ``example``'s image size and prepared for QAT by PT2E (train mode)."""
    if not isinstance(example, Tensor) or example.dim() != 4:
        raise ValueError("prepare_qat(flow='pt2e') needs example=a float32 batch of images (N, C, H, W) "
                         "at the size you will train and run")
    _check_images(example, tuple(example.shape[1:]), "prepare_qat(flow='pt2e')")
    _torchao()
    # a copy: the captured graph shares its parameters with the module it was exported from
    graph = _capture(copy.deepcopy(model), example, qat=True, step="prepare_qat")
    prepared = Pt2eQatModel(graph, tuple(example.shape[1:]))
    return prepared.train()


def convert(model: Pt2eQatModel) -> Pt2eModel:
    """The int8 :class:`Pt2eModel` of a trained :class:`Pt2eQatModel` (its fake-quant ranges become int8 scales)."""
    model.eval()
    with _routine_noise_silenced():
        return Pt2eModel(_torchao().convert_pt2e(model.graph), model.image_shape)
