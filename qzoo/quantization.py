"""The only module that touches ``torch.ao.quantization``.

Backends, qconfig presets, the building blocks that quantizable models use (stubs,
``FloatFunctional``, fusion), and the prepare -> calibrate -> convert workflow. Every step
checks the state it is given and says what to do instead of producing a silently wrong model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib
import itertools
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import numpy as np
import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.qat as nniqat
import torch.ao.nn.quantized as nnq
import torch.ao.quantization as tq
from torch import Tensor, nn
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.quantization import DeQuantStub, QConfig, QuantStub

from ._record import ModelRecord, record_of, update_record
from .data import calibration_batches

__all__ = [
    "BACKENDS",
    "ACTIVATION_OBSERVERS",
    "DeQuantStub",
    "FloatFunctional",
    "QuantStub",
    "QuantizableModel",
    "DEFAULT_BACKEND",
    "get_qconfig",
    "quantized_engine",
    "backend_engine",
    "check_int8_input",
    "fuse_modules",
    "fusion_step",
    "fused_mode",
    "model_backend",
    "model_record",
    "prepare_ptq",
    "prepare_qat",
    "calibrate",
    "convert",
    "require_int8",
    "FloatLayer",
    "FloatOps",
    "FloatLogitsLinear",
    "float_logits",
]

BACKENDS: tuple[str, ...] = ("x86", "fbgemm", "qnnpack", "onednn")
"""Quantized engines qzoo supports; each name is also a ``torch.backends.quantized.engine``."""

DEFAULT_BACKEND = "x86"
"""The backend of every qzoo call that is not given one (torch's own default engine on x86 CPUs)."""

ACTIVATION_OBSERVERS: tuple[str, ...] = ("histogram", "minmax")
"""Activation observers for PTQ. QAT always uses a moving-average min-max fake-quant."""

# Backends whose int8 kernels can overflow on CPUs without VNNI unless activations use 7 bits.
_REDUCED_RANGE_BACKENDS = ("x86", "fbgemm")

# Warnings that torch raises on every correct use of the eager-mode API. Only these are
# silenced, and only around qzoo's own calls; misuse warnings still reach the user.
_ROUTINE_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (DeprecationWarning, r"torch\.ao\.quantization is deprecated"),
    (UserWarning, r"Please use quant_min and quant_max"),
    (UserWarning, r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized"),
)

# Elements per step of qzoo's histogram count (1 MiB of float32).
_HISTOGRAM_CHUNK = 1 << 18

@contextlib.contextmanager
def routine_warnings_silenced() -> Iterator[None]:
    """Hide only the warnings torch raises on every correct use of eager-mode quantization."""
    with warnings.catch_warnings():
        for category, message in _ROUTINE_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def check_backend(backend: str) -> str:
    """``backend`` if qzoo supports it and this torch has its engine; else a ``ValueError`` naming the choices."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend not in torch.backends.quantized.supported_engines:
        supported = ", ".join(e for e in torch.backends.quantized.supported_engines if e != "none")
        raise ValueError(
            f"backend {backend!r} is not built into this torch; this machine supports: {supported}"
        )
    return backend


class HistogramObserver(tq.HistogramObserver):
    """torch's histogram observer with a faster count: the same histogram, so the same qparams.

    ``torch.histc`` spends about 8 ns per element on CPU, which made it half the cost of
    calibration. Each element's bin is computed with the float operations histc uses, in
    cache-sized chunks, and counted with ``bincount``: about 3x faster, the same counts.
    Ranges that grow between batches are merged by torch's own code; non-finite batches take
    torch's path (which drops infinities).
    """

    def forward(self, x_orig: Tensor) -> Tensor:
        x = x_orig.detach()
        if x.numel() == 0:
            return x_orig
        low, high = torch.aminmax(x)
        if not (torch.isfinite(low) and torch.isfinite(high)):
            return super().forward(x_orig)
        if self.min_val.numel() == 0 or not torch.isfinite(self.min_val):  # first batch
            self.min_val.resize_(low.shape).copy_(low)
            self.max_val.resize_(high.shape).copy_(high)
            self.histogram.resize_(self.bins).copy_(self._histc(x, low, high))
            return x_orig
        new_min, new_max = torch.minimum(self.min_val, low), torch.maximum(self.max_val, high)
        counts = self._histc(x, new_min, new_max)
        if torch.equal(new_min, self.min_val) and torch.equal(new_max, self.max_val):
            self.histogram.add_(counts)
        else:
            merged = self._combine_histograms(self.histogram, self.min_val, self.max_val, counts, new_min, new_max)
            self.histogram.resize_(merged.shape).copy_(merged)
            self.min_val.copy_(new_min)
            self.max_val.copy_(new_max)
        return x_orig

    def _histc(self, x: Tensor, low: Tensor, high: Tensor) -> Tensor:
        """``torch.histc(x, self.bins, low, high)`` for ``low <= x <= high``, bit for bit."""
        if torch.equal(low, high):  # histc widens an empty range by one on each side
            low, high = low - 1, high + 1
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            x = x.permute(0, 2, 3, 1)  # a contiguous view: the order of elements does not matter here
        counts = torch.zeros(self.bins + 1, dtype=torch.int64, device=x.device)
        # chunks that stay in cache are ~3x faster than whole-tensor passes
        for chunk in x.reshape(-1).split(_HISTOGRAM_CHUNK):
            # histc's bin for each element: (x - low) * bins / (high - low), in x's dtype, truncated
            index = torch.sub(chunk, low).mul_(self.bins).div_(high - low).to(torch.int32)
            counts += torch.bincount(index, minlength=self.bins + 1)
        counts[self.bins - 1] += counts[self.bins]  # x == high falls in the last bin
        return counts[: self.bins].to(self.histogram.dtype)


def get_qconfig(
    backend: str = DEFAULT_BACKEND,
    *,
    qat: bool = False,
    activation: Literal["histogram", "minmax"] | None = None,
    weights: Literal["per_channel", "per_tensor"] = "per_channel",
) -> QConfig:
    """The qzoo preset for ``backend``: per-channel symmetric int8 weights on every backend
    (``weights="per_tensor"``: one scale per layer, what some accelerators take; for comparisons).

    PTQ activations use a histogram observer by default (or ``activation="minmax"``); QAT
    uses fused moving-average min-max fake-quant. x86/fbgemm activations use 7 bits
    (``quant_max=127``), as torch's defaults do, to avoid overflow on CPUs without VNNI.
    """
    check_backend(backend)
    if weights not in ("per_channel", "per_tensor"):
        raise ValueError(f"weights={weights!r}: choose 'per_channel' or 'per_tensor'")
    per_channel = weights == "per_channel"
    act_max = 127 if backend in _REDUCED_RANGE_BACKENDS else 255
    if qat:
        if activation not in (None, "minmax"):
            raise ValueError(
                f"QAT uses a moving-average min-max fake-quant; activation={activation!r} is for "
                "PTQ only: drop activation= or pass activation='minmax'"
            )
        act = tq.FusedMovingAvgObsFakeQuantize.with_args(
            observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=act_max, dtype=torch.quint8
        )
        return QConfig(activation=act, weight=tq.default_fused_per_channel_wt_fake_quant if per_channel
                       else tq.default_fused_wt_fake_quant)
    observers = {"histogram": HistogramObserver, "minmax": tq.MinMaxObserver}
    name = activation or "histogram"
    if name not in observers:
        raise ValueError(f"unknown activation observer {name!r}: choose one of {', '.join(observers)}")
    act = observers[name].with_args(dtype=torch.quint8, quant_min=0, quant_max=act_max)
    return QConfig(activation=act, weight=tq.default_per_channel_weight_observer if per_channel
                   else tq.default_weight_observer)


def model_record(model: nn.Module) -> ModelRecord:
    """What qzoo knows about ``model``: architecture, arguments, weights entry, backend, mode, fusion."""
    record = record_of(model)
    if record.fused is None and record.mode == "float":
        return dataclasses.replace(record, fused=fused_mode(model))
    return record


def model_backend(model: nn.Module) -> str | None:
    """The backend ``model`` was prepared for, or ``None`` for a float model."""
    return record_of(model).backend


@contextlib.contextmanager
def quantized_engine(backend: str | nn.Module) -> Iterator[str]:
    """Run a block under a quantized engine and restore the previous engine afterwards.

    ``backend`` is a backend name or a prepared/converted qzoo model (its recorded backend).
    Run int8 inference of a model quantized for another backend inside this block: kernels
    such as the quantized add follow the global engine.
    """
    name = model_backend(backend) if isinstance(backend, nn.Module) else backend
    if name is None:
        raise ValueError("this model was never prepared for quantization, so it has no backend")
    check_backend(name)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield name
    finally:
        torch.backends.quantized.engine = previous


class _EngineGate:
    """Lets int8 calls of one backend run together, and a call needing another engine wait for them.

    The engine is process-global: switching it while another thread runs an x86 model changes
    that model's logits. Calls of the backend in force run at once; a call that needs another
    engine waits until none is running, switches, and the engine in force before is restored
    when the last call of its group leaves.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._backend: str | None = None
        self._restore: str | None = None
        self._inside = threading.local()  # how deep this thread is in calls

    @contextlib.contextmanager
    def use(self, backend: str) -> Iterator[None]:
        depth = getattr(self._inside, "depth", 0)
        with self._changed:
            if depth and self._backend != backend:
                raise RuntimeError(
                    f"a {backend} int8 call inside a running {self._backend} one: the engine is process-wide "
                    "and cannot serve both at once; call the two models one after the other"
                )
            self._changed.wait_for(lambda: self._running == 0 or self._backend == backend)
            if self._running == 0:
                current = torch.backends.quantized.engine
                self._restore = current if current != backend else None
                if self._restore is not None:
                    torch.backends.quantized.engine = backend
                self._backend = backend
            self._running += 1
        self._inside.depth = depth + 1
        try:
            yield
        finally:
            self._inside.depth = depth
            with self._changed:
                self._running -= 1
                if self._running == 0:
                    if self._restore is not None:
                        torch.backends.quantized.engine = self._restore
                    self._backend = self._restore = None
                    self._changed.notify_all()


_ENGINE_GATE = _EngineGate()


def backend_engine(backend: str) -> contextlib.AbstractContextManager[None]:
    """Run int8 kernels under ``backend``'s engine, alongside other calls of the same backend.

    Unlike :func:`quantized_engine`, it is safe from many threads: a call that needs another
    engine waits until the calls of the current one are done (see :class:`_EngineGate`).
    """
    return _ENGINE_GATE.use(check_backend(backend))


@contextlib.contextmanager
def _int8_engine(model: nn.Module) -> Iterator[None]:
    """Run an int8 ``model`` under the engine it was packed for (see :class:`_EngineGate`)."""
    record = record_of(model)
    if record.mode != "int8" or record.backend is None:
        yield
        return
    with _ENGINE_GATE.use(record.backend):
        yield


def check_int8_input(images: Any) -> None:
    """Refuse inputs an int8 model cannot take, naming float32 CPU images and the transform, or the
    missing batch dimension (torch's kernels say only "Input shape must be `(N, C, H, W)`!").

    NaN and Inf are refused too: quantizing clamps them to the int8 range, so the model would
    return finite, plausible logits for a broken image.
    """
    if not isinstance(images, Tensor):
        hint = ": convert it with torch.from_numpy(array)" if isinstance(images, np.ndarray) else ""
        raise TypeError(f"this int8 model takes a float32 CPU Tensor of images, got {type(images).__name__}{hint}")
    if images.dtype != torch.float32 or images.device.type != "cpu":
        raise TypeError(
            f"this int8 model takes float32 CPU images, got {images.dtype} on {images.device}: "
            "apply the model's preprocessing transform (e.g. ToTensor + Normalize) and keep it on the CPU"
        )
    if images.dim() != 4:
        hint = ": add the batch dimension (images.unsqueeze(0))" if images.dim() == 3 else ""
        raise ValueError(f"this int8 model takes a batch of images shaped (N, C, H, W), got "
                         f"{tuple(images.shape)}{hint}")
    _refuse_non_finite(images)


# torch.compile runs this as it is, outside its graph: traced, the numpy view failed dynamo's guards under
# inference_mode ("Guard failed on the same frame it was created", torch 2.14)
@torch.compiler.disable
def _refuse_non_finite(images: Tensor) -> None:
    """Refuse NaN and Inf in ``images``.

    numpy's max and min propagate NaN and reach +-Inf, so two vectorized passes test every value exactly:
    60x faster than torch's elementwise test (0.6 ms per 224x224 image, 10 % of an int8 call) and twice
    as fast as a sum, on this thread, where torch's would wake its OpenMP workers, which then spin on
    the cores ONNX Runtime's own threads need next (measured: 1.6 ms at 2 threads, RegNetX-400MF).
    """
    if torch.jit.is_tracing():  # a traced graph keeps no Python check: tracing says so in a TracerWarning
        return
    values = images.detach().numpy()
    if values.size and not (np.isfinite(values.max()) and np.isfinite(values.min())):
        raise ValueError("the images contain NaN or Inf values, which int8 would turn into plausible logits: "
                         "check the decoding and preprocessing of these inputs")


class NotPickled:
    """Mixin for modules that cannot survive pickling (``torch.save``, worker processes): pickling raises the
    reason :meth:`not_pickled_reason` gives, naming what works instead; ``copy.deepcopy`` keeps working."""

    def not_pickled_reason(self) -> str | None:
        """Why this module is not pickled, or ``None`` where it is."""
        return None

    def __reduce_ex__(self, protocol: Any) -> Any:
        reason = self.not_pickled_reason()
        if reason:
            raise TypeError(reason)
        return super().__reduce_ex__(protocol)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # what copy.deepcopy does by default (a new instance given a deep copy of the state), which would
        # otherwise go through the refusing __reduce_ex__
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(self.__getstate__(), memo))  # type: ignore[attr-defined]
        return copied


class QuantizableModel(NotPickled, nn.Module):
    """Mixin for qzoo's top-level models: an int8 model loads and runs under its own backend.

    Packed int8 weights are repacked for the *global* engine when a state_dict is loaded, and
    kernels such as the quantized add follow it at run time, so a qnnpack model used under
    the default x86 engine silently gives other logits. Calls and loads switch to the model's
    backend for their duration and restore the previous engine. TorchScript exports lose
    this: run them inside ``qzoo.quantized_engine(backend)``.

    It also adds the ``QuantStub``/``DeQuantStub`` pair (after the parent's modules, where
    torchvision's quantizable models register theirs) and a ``forward`` that wraps the parent's
    float ``_forward_impl`` in them: float images in, float logits out, int8 in between.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.quant = QuantStub()
        self.dequant = DeQuantStub()

    def forward(self, x: Tensor) -> Tensor:
        return self.dequant(self._forward_impl(self.quant(x)))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if is_int8(self):
            check_int8_input(args[0] if args else next(iter(kwargs.values()), None))
        with _int8_engine(self):
            return super().__call__(*args, **kwargs)

    def not_pickled_reason(self) -> str | None:
        # torch's quantized modules unpickle without their nn.Module state (no hooks, no _modules) and fail on
        # their first call, so torch.save(int8_model) would write a file that loads broken; prepared models fail
        # in pickle on their observers' local functions. Float models pickle.
        mode = record_of(self).mode
        if mode == "int8":
            return ("torch.save(model) and pickle do not work for int8 models (torch's quantized modules load "
                    "broken): save with qzoo.save_pretrained(model, folder) and load with "
                    "qzoo.from_pretrained(folder), or load torch.save(model.state_dict()) into "
                    "qzoo.int8_skeleton(float_model, backend)")
        if mode in ("ptq", "qat"):
            return (f"torch.save(model) and pickle do not work for models prepared for {mode.upper()} (torch's "
                    "observers hold local functions): save model.state_dict() and load it into the same float "
                    f"model prepared again{', or use qzoo.save_pretrained' * (mode == 'qat')}")
        return None

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        with _int8_engine(self):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # a copy repacks every int8 weight (torch's packed parameters are copied through their state), and packing
        # follows the global engine: a qnnpack model copied under x86 got x86-packed weights and other logits
        with _int8_engine(self):
            return super().__deepcopy__(memo)

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        # .half(), .double(), .to(dtype) would silently skip packed int8 weights (a no-op that
        # looks like a conversion) and .cuda() fails deep inside: refuse any move off float32 CPU
        if is_int8(self):
            try:
                probe = fn(torch.zeros(1))
            except Exception:  # noqa: BLE001 - e.g. .cuda() without a GPU: a move, refused below
                probe = None
            if probe is None or probe.dtype != torch.float32 or probe.device.type != "cpu":
                raise TypeError(
                    f"{type(self).__name__} is an int8 model: it runs on the CPU and cannot change dtype "
                    "or device (.half(), .double(), .to(...), .cuda()); give it float32 CPU images after "
                    "the model's preprocessing transform (e.g. ToTensor + Normalize), and keep the float "
                    "model for other dtypes or devices"
                )
        return super()._apply(fn, *args, **kwargs)


# ----------------------------------------------------------------------------- fusion


def fuse_modules(module: nn.Module, groups: list[list[str]], is_qat: bool) -> None:
    """Fuse each group of child names (conv-bn, conv-bn-relu, linear-relu) of ``module`` in place."""
    fuse = tq.fuse_modules_qat if is_qat else tq.fuse_modules
    with routine_warnings_silenced():
        fuse(module, groups, inplace=True)


def fused_mode(model: nn.Module) -> Literal["ptq", "qat"] | None:
    """How ``model`` was fused: ``"ptq"`` (BatchNorm folded), ``"qat"`` (BatchNorm kept), or None."""
    mode = record_of(model).fused
    if mode is not None:
        return mode
    fused = [m for m in model.modules() if isinstance(m, nni._FusedModule) or hasattr(m, "freeze_bn_stats")]
    if not fused:
        return None
    keeps_batchnorm = any(
        hasattr(m, "freeze_bn_stats") or any(isinstance(c, nn.modules.batchnorm._BatchNorm) for c in m.children())
        for m in fused
    )
    return "qat" if keeps_batchnorm else "ptq"


def fusion_step(method: Callable[[Any, bool], None]) -> Callable[..., None]:
    """Decorate a ``fuse_model(self, is_qat)`` so it resolves ``is_qat=None`` and guards misuse.

    ``None`` follows ``self.training``. Fusing twice, or fusing for PTQ in train mode (which
    would fold batch statistics into the weights), raises instead of producing a wrong model.
    """

    @functools.wraps(method)
    def fuse_model(self: nn.Module, is_qat: bool | None = None) -> None:
        name = type(self).__name__
        if is_qat is None:
            is_qat = self.training
        done = fused_mode(self)
        if done is not None:
            raise RuntimeError(
                f"{name} is already fused (for {done.upper()}); fuse_model runs once on a fresh "
                "float model: build a new one (e.g. qzoo.get_model(...)) to fuse again"
            )
        # is_qat=True in eval mode is allowed, as torch's fuse_modules_qat allows it: the fused
        # modules keep BatchNorm, and prepare_qat switches to train mode
        if not is_qat and self.training:
            raise RuntimeError(
                f"fuse_model(is_qat=False) folds BatchNorm statistics but {name} is in train mode: "
                "call model.eval() first, or use is_qat=True for quantization-aware training"
            )
        method(self, is_qat)
        update_record(self, fused="qat" if is_qat else "ptq")

    return fuse_model


# ----------------------------------------------------------------------------- workflow


def _has_observers(model: nn.Module) -> bool:
    return any(isinstance(m, (tq.ObserverBase, tq.FakeQuantizeBase)) for m in model.modules())


def _is_converted(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules()
               if not isinstance(m, FloatFunctional))


def _require_float(model: nn.Module, step: str) -> None:
    if _is_converted(model):
        raise RuntimeError(f"{step}: the model is already converted to int8; start again from a float model")
    if _has_observers(model):
        raise RuntimeError(
            f"{step}: the model is already prepared (it holds observers); prepare runs once: "
            "calibrate or train it and call qzoo.convert, or start again from a float model"
        )
    dtypes = {str(p.dtype) for p in model.parameters() if p.is_floating_point()} - {str(torch.float32)}
    if dtypes:
        raise TypeError(f"{step}: the model has {', '.join(sorted(dtypes))} weights; quantization starts from "
                        "float32 weights: call model.float() first")
    if not any(isinstance(m, QuantStub) for m in model.modules()):
        raise TypeError(f"{step}: {type(model).__name__} has no QuantStub, so its int8 version could not take float "
                        "images: build it with a qzoo factory (qzoo.get_model(name)) and load your state_dict into "
                        "it (torchvision's keys load as they are), or add QuantStub and DeQuantStub to your model")


def _require_prepared(model: nn.Module, step: str) -> str:
    backend = model_backend(model)
    if _is_converted(model):
        raise RuntimeError(f"{step}: the model is already converted to int8")
    if backend is None or not _has_observers(model):
        raise RuntimeError(
            f"{step} needs a prepared model: call qzoo.prepare_ptq(model) (or build it with "
            "prepare='ptq'), or qzoo.prepare_qat(model) for quantization-aware training"
        )
    return backend


def _attach(model: nn.Module, backend: str, qconfig: QConfig, qat: bool, relu6_range: bool = True,
            float_layers: Iterable[str] = ()) -> None:
    kept = _keep_float(model, float_layers)
    model.qconfig = qconfig
    with routine_warnings_silenced():
        (tq.prepare_qat if qat else tq.prepare)(model, inplace=True)
    if not qat:
        _observe_fused_outputs_once(model)
    if relu6_range:
        _relu6_as_output_range(model)
    update_record(model, backend=backend, mode="qat" if qat else "ptq", fused=fused_mode(model), float_layers=kept)


def _observe_fused_outputs_once(model: nn.Module) -> None:
    """Drop the second observation torch's ``prepare`` gives each fused module's output.

    A fused module (``ConvReLU2d``...) is an ``nn.Sequential``; ``prepare`` adds its observer as
    the last child, which the Sequential runs, and also as a forward hook, which runs it again
    on the same tensor. For PTQ observers that only doubles every count (the same qparams, bit
    for bit) and the time; the hook goes. QAT keeps torch's behaviour, as the second pass there
    fake-quantizes the already fake-quantized output and steps the moving averages again.
    """
    # tq.quantize is the function of that name; the hook lives in the module
    hook = getattr(importlib.import_module("torch.ao.quantization.quantize"), "_observer_forward_hook", None)
    for module in model.modules():
        if isinstance(module, nni._FusedModule) and "activation_post_process" in module._modules:
            for key, registered in list(module._forward_hooks.items()):
                if registered is hook:
                    del module._forward_hooks[key]


class ReLU6AsRange(nn.Module):
    """Where a ReLU6 stood before ``prepare``: the layer before it now applies the clamp.

    That layer's observer (PTQ) or fake-quant (QAT) receives its output clamped to [0, 6], so the
    int8 output range it gets starts at 0 and ends at most at 6. With full 8-bit activations
    (qnnpack, onednn) int8 saturation then is the ReLU6, exactly, and this module passes its
    input through: no int8 op of its own, and no codes spent on values the clamp discards.
    7-bit activations (x86, fbgemm: ``quant_max=127``) store values up to twice the observed
    range in the 8-bit tensor, so there an int8 ReLU6 still runs whenever the output's scale can
    represent values outside [0, 6]. Kept as a module so the printout says where the ReLU6 went.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.is_quantized:
            top = 255 if x.dtype == torch.quint8 else 127
            if x.q_zero_point() > 0 or (top - x.q_zero_point()) * x.q_scale() > 6.0:
                return torch.nn.functional.hardtanh(x, 0.0, 6.0)  # relu6, as the ONNX exporter takes int8
        return x  # float: the layer before already clamped its output when observing it

    def extra_repr(self) -> str:
        return "ReLU6 applied as the output range [0, 6] of the layer before"


class FloatLayer(nn.Module):
    """A layer kept in float inside an int8 model (``prepare_ptq(..., float_layers=[name])``).

    Its int8 input is dequantized, the layer runs in float, and its output is quantized again
    with a scale of its own, observed like any layer's. Before conversion both stubs pass
    their input through, so the prepared model computes what the float model does.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        layer.qconfig = None  # not observed, not converted: float in the int8 model
        self.dequant, self.layer, self.quant = DeQuantStub(), layer, QuantStub()

    def forward(self, x: Tensor) -> Tensor:
        return self.quant(self.layer(self.dequant(x)))


class FloatOps(nn.Module):
    """A ``FloatFunctional`` (add, mul, cat) kept in float inside an int8 model: inputs dequantized,
    the float op, the output quantized with a scale of its own. Same methods as ``FloatFunctional``."""

    def __init__(self) -> None:
        super().__init__()
        self.dequant, self.quant = DeQuantStub(), QuantStub()

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("FloatOps stands for a FloatFunctional: call add, add_relu, mul, cat, add_scalar or mul_scalar")

    def add(self, x: Tensor, y: Tensor) -> Tensor:
        return self.quant(torch.add(self.dequant(x), self.dequant(y)))

    def add_relu(self, x: Tensor, y: Tensor) -> Tensor:
        return self.quant(torch.relu(torch.add(self.dequant(x), self.dequant(y))))

    def mul(self, x: Tensor, y: Tensor) -> Tensor:
        return self.quant(torch.mul(self.dequant(x), self.dequant(y)))

    def cat(self, x: list[Tensor], dim: int = 0) -> Tensor:
        return self.quant(torch.cat([self.dequant(t) for t in x], dim=dim))

    def add_scalar(self, x: Tensor, y: float) -> Tensor:
        return self.quant(torch.add(self.dequant(x), y))

    def mul_scalar(self, x: Tensor, y: float) -> Tensor:
        return self.quant(torch.mul(self.dequant(x), y))


_KEEPABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nni._FusedModule, FloatFunctional)


def _keep_float(model: nn.Module, names: Iterable[str]) -> tuple[str, ...]:
    """Wrap each named layer of a fused model in :class:`FloatLayer` (a ``FloatFunctional`` becomes
    :class:`FloatOps`); names as the sensitivity report gives them."""
    kept = tuple(dict.fromkeys(names))
    for name in kept:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"float_layers: the model has no layer {name!r}; name conv, linear or add/mul/cat "
                             "layers as qzoo.sensitivity's report does (after fusion)") from None
        if not isinstance(layer, _KEEPABLE) or isinstance(layer, (FloatLayer, FloatOps)):
            raise ValueError(f"float_layers: {name} is a {type(layer).__name__}; only conv, linear, fused "
                             "conv blocks and FloatFunctional add/mul/cat layers can stay float")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FloatOps() if isinstance(layer, FloatFunctional) else FloatLayer(layer))
    return kept


_PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm3d, nni._FusedModule, FloatLayer)


def _clamp_observed(low: float, high: float, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    # the producer's fresh output, seen by nothing else: clamped in place unless autograd needs it
    x = args[0]
    return (x.clamp(low, high) if x.requires_grad else x.clamp_(low, high), *args[1:])


def _relu6_as_output_range(model: nn.Module) -> None:
    """Move each ``nn.ReLU6`` that directly follows a conv, linear or BatchNorm layer (fused or not) in
    an ``nn.Sequential`` into that layer's output observer (:class:`ReLU6AsRange`).

    In a Sequential the layer's output goes only to the next child (``nn.Identity`` children
    left by fusion are skipped), so clamping it before observation changes nothing in float and
    gives int8 the clamp for free. torch's eager flow instead observes the unclamped output and
    runs the ReLU6 on that scale: a range including the negative values and everything above 6.
    """
    for container in list(model.modules()):
        if not isinstance(container, nn.Sequential) or isinstance(container, nni._FusedModule):
            continue
        names = [name for name, child in container.named_children() if not isinstance(child, nn.Identity)]
        for before, name in itertools.pairwise(names):
            producer, relu6 = container._modules[before], container._modules[name]
            observer = getattr(producer.quant if isinstance(producer, FloatLayer) else producer,
                               "activation_post_process", None)
            if type(relu6) is nn.ReLU6 and isinstance(producer, _PRODUCERS) and observer is not None:
                observer.register_forward_pre_hook(functools.partial(_clamp_observed, 0.0, 6.0))
                container._modules[name] = ReLU6AsRange()


def prepare_ptq(model: nn.Module, backend: str = DEFAULT_BACKEND, qconfig: QConfig | None = None, *,
                relu6_range: bool = True, float_layers: Iterable[str] = ()) -> nn.Module:
    """Fuse (if the model has ``fuse_model``) and insert observers for post-training quantization.

    Returns ``model`` itself (changed in place) in eval mode, ready for :func:`calibrate`. An explicit ``qconfig``
    overrides qzoo's preset for ``backend``. ``relu6_range=False`` keeps torch's own handling of
    a ReLU6 after a conv (see :class:`ReLU6AsRange`), for comparisons. ``float_layers`` names
    layers (after fusion, as :func:`qzoo.sensitivity.sensitivity` reports them) that stay float in
    the int8 model, with their own quantize/dequantize boundaries (:class:`FloatLayer`).
    """
    check_backend(backend)
    _require_float(model, "prepare_ptq")
    model.eval()
    mode = fused_mode(model)
    if mode == "qat":
        raise RuntimeError(
            "prepare_ptq: the model was fused for QAT (BatchNorm kept); use qzoo.prepare_qat, "
            "or fuse a fresh model in eval mode"
        )
    if mode is None and hasattr(model, "fuse_model"):
        model.fuse_model(is_qat=False)
    _attach(model, backend, qconfig or get_qconfig(backend), qat=False, relu6_range=relu6_range,
            float_layers=float_layers)
    return model


def prepare_qat(model: nn.Module, backend: str = DEFAULT_BACKEND, qconfig: QConfig | None = None, *,
                relu6_range: bool = True, float_layers: Iterable[str] = ()) -> nn.Module:
    """Fuse for QAT (if the model has ``fuse_model``) and insert fake-quant modules.

    Returns ``model`` in train mode, ready to fine-tune, then :func:`convert`. ``relu6_range`` and
    ``float_layers`` as in :func:`prepare_ptq`.
    """
    check_backend(backend)
    _require_float(model, "prepare_qat")
    mode = fused_mode(model)
    if mode == "ptq":
        raise RuntimeError(
            "prepare_qat: the model was fused for PTQ (BatchNorm folded in eval mode), so it "
            "cannot train its BatchNorm; fuse a fresh model in train mode or use qzoo.prepare_ptq"
        )
    model.train()
    if mode is None and hasattr(model, "fuse_model"):
        model.fuse_model(is_qat=True)
    _attach(model, backend, qconfig or get_qconfig(backend, qat=True), qat=True, relu6_range=relu6_range,
            float_layers=float_layers)
    return model


def calibrate(
    model: nn.Module, data: Iterable[Any], num_batches: int | None = None, *, progress: bool = True
) -> nn.Module:
    """Run batches through a PTQ-prepared model so its observers record activation ranges.

    ``data`` yields tensors or ``(tensor, target)`` pairs; ``num_batches`` stops early.
    Raises on an empty iterable and names any batch that holds NaN or Inf.
    """
    _require_prepared(model, "calibrate")
    model.eval()
    with torch.no_grad():
        for images in calibration_batches(data, num_batches, progress=progress):
            model(images)
    return model


def _never_saw_data(model: nn.Module) -> bool:
    """True when no observer recorded a range (observers of unused add modules stay empty anyway)."""
    ranges = [m.min_val for m in model.modules() if isinstance(m, tq.ObserverBase) and hasattr(m, "min_val")]
    return not any(r.numel() > 0 and torch.isfinite(r).all() for r in ranges)


def _audit_int8(model: nn.Module) -> None:
    kept = [n for n, m in model.named_modules() if isinstance(m, FloatLayer)]
    leftovers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                 and not any(n.startswith(f"{k}.") for k in kept)]
    if leftovers:
        raise RuntimeError(
            f"convert left float layers behind ({', '.join(leftovers[:3])}...): the model was "
            "prepared without a qconfig on them or for the other mode; prepare a fresh model"
        )
    for name, m in model.named_modules():
        scale = getattr(m, "scale", None)
        if scale is None:
            continue
        values = scale if isinstance(scale, Tensor) else torch.tensor(float(scale))
        if not (torch.isfinite(values).all() and (values > 0).all()):
            raise RuntimeError(f"convert produced an invalid output scale at {name or 'input'}: {scale}")


def _convert(model: nn.Module, *, require_calibration: bool) -> nn.Module:
    backend = _require_prepared(model, "convert")
    if require_calibration and _never_saw_data(model):
        raise RuntimeError(
            "convert: the observers never saw data, so every scale would be a placeholder; run "
            "qzoo.calibrate(model, batches) (PTQ) or train a few steps (QAT) before converting"
        )
    model.eval()
    with routine_warnings_silenced(), quantized_engine(backend):
        # observers of unused modules (a skip add in a block without a skip) keep placeholder
        # scales; so does the whole model when only its int8 structure is wanted
        warnings.filterwarnings("ignore", message=r"must run observer before calling calculate_qparams")
        tq.convert(model, inplace=True)
    _audit_int8(model)
    update_record(model, mode="int8")
    return model


def convert(model: nn.Module) -> nn.Module:
    """Convert a calibrated (PTQ) or trained (QAT) model to int8 under its backend, in eval mode and in place.

    Refuses a model whose observers never saw data (torch would silently use scale 1 and
    zero point 0), and audits the result: no float Conv/Linear left, every scale finite and positive.
    """
    return _convert(model, require_calibration=True)


def int8_skeleton(model: nn.Module, backend: str = DEFAULT_BACKEND, float_layers: Iterable[str] = (),
                  float_logits_layer: str | None = None) -> nn.Module:
    """The int8 structure of a float model with placeholder scales, to load an int8 state_dict into
    (``float_layers`` and ``float_logits_layer`` as the saved model had them). Its outputs mean nothing
    until a converted model's ``state_dict`` is loaded.
    """
    prepare_ptq(model, backend, float_layers=float_layers)
    _convert(model, require_calibration=False)
    return model if float_logits_layer is None else float_logits(model, float_logits_layer)


class FloatLogitsLinear(nn.Module):
    """An int8 linear layer whose output stays float: int8 weights (per output channel) and int8 inputs,
    multiplied and summed in float, without the rounding to an 8-bit output grid.

    A converted ``Linear`` stores its output on 128 (x86) or 256 levels, so close logits become equal
    and top-1 among them falls to the tie rule; this layer keeps the sum as it is. The weights are plain
    int8 values with float scales and integer zero points (no quantized tensor type), the bias float32.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float64))
        self.register_buffer("weight_zero_point", torch.zeros(out_features, dtype=torch.int64))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        # the float weights the int8 values stand for, made once per load instead of once per call (eager
        # Lite0: 10 % of a batch-1 call); not saved: the file keeps int8
        self.register_buffer("float_weight", self.dequantized_weight(), persistent=False)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.float_weight = self.dequantized_weight()

    @classmethod
    def from_int8(cls, linear: nn.Module) -> FloatLogitsLinear:
        """The same layer as a converted ``torch.ao.nn.quantized.Linear``: its int8 weights and bias, exactly."""
        weight, bias = linear.weight(), linear.bias()
        layer = cls(linear.in_features, linear.out_features, bias is not None)
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scale, zero_point = weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
        else:  # one scale for the layer, written out per channel
            scale = torch.full((linear.out_features,), weight.q_scale(), dtype=torch.float64)
            zero_point = torch.full((linear.out_features,), weight.q_zero_point(), dtype=torch.int64)
        layer.weight.copy_(weight.int_repr())
        layer.weight_scale.copy_(scale)
        layer.weight_zero_point.copy_(zero_point)
        if bias is not None:
            layer.bias.copy_(bias.detach())
        layer.float_weight = layer.dequantized_weight()
        return layer

    def dequantized_weight(self) -> Tensor:
        """The float32 weights the int8 values stand for."""
        scale = self.weight_scale.to(torch.float32).unsqueeze(1)
        return (self.weight.to(torch.float32) - self.weight_zero_point.to(torch.float32).unsqueeze(1)) * scale

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x.dequantize() if x.is_quantized else x, self.float_weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights, float output"


def _output_linear(model: nn.Module) -> str:
    """The name of the model's last int8 linear layer (the classifier of every qzoo family)."""
    names = [(name, type(module) is nnq.Linear) for name, module in model.named_modules()
             if type(module) is nnq.Linear or (isinstance(module, FloatLayer) and isinstance(module.layer, nn.Linear))]
    if names and not names[-1][1]:
        raise ValueError(f"float_logits: the last linear layer, {names[-1][0]}, is kept float (float_layers), so the "
                         "logits are float already before their requantization; name another layer with layer=")
    if not names:
        raise ValueError("float_logits: the model has no int8 linear layer (a plain nn.Linear converted by "
                         "qzoo.convert); name the layer with layer=")
    return names[-1][0]


def float_logits(model: nn.Module, layer: str | None = None) -> nn.Module:
    """Make an int8 model's output layer compute its output in float (:class:`FloatLogitsLinear`), in place.

    ``layer`` (default: the last int8 linear layer, every qzoo family's classifier) must be a converted
    ``Linear`` whose output only the model's output ``DeQuantStub`` reads (a layer feeding another int8
    op would hand it a float tensor, which that op refuses). Its weights and inputs stay int8; its output
    is no longer rounded to 8 bits, so logits keep their order instead of tying, and none is clamped to
    the range calibration saw. The file keeps the int8 weights (a few kilobytes more: float64 scales and
    int64 zero points per output); ``qzoo.save_pretrained``, ``from_pretrained`` and the ONNX writer follow it.
    """
    require_int8(model, "float_logits")
    if record_of(model).float_logits is not None:
        raise RuntimeError(f"float_logits: {record_of(model).float_logits} already computes its output in float")
    name = _output_linear(model) if layer is None else layer
    try:
        target = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"float_logits: the model has no layer {name!r}") from None
    if type(target) is not nnq.Linear:
        raise ValueError(f"float_logits: {name} is a {type(target).__name__}; only a converted Linear without a "
                         "fused ReLU (torch.ao.nn.quantized.Linear) can give float logits")
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, FloatLogitsLinear.from_int8(target))
    update_record(model, float_logits=name)
    return model


def is_qat_state(state: dict[str, Any]) -> bool:
    """Whether a checkpoint's ``state_dict`` is of a QAT-prepared model (it holds fake-quant state)."""
    return any(key.endswith(".fake_quant_enabled") for key in state)


def int8_from_qat_state(model: nn.Module, state: dict[str, Any], backend: str, source: str) -> nn.Module:
    """Convert a QAT checkpoint made with torch's default QAT qconfig for ``backend`` into ``model``.

    torchvision publishes MobileNetV3-Large's int8 weights this way: the float model is fused for
    QAT, prepared with that qconfig, given the state and converted, as torchvision's factory does.
    """
    prepare_qat(model, backend, tq.get_default_qat_qconfig(backend))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise ValueError(f"{source} does not fit this model as a QAT state ({detail[:300]})") from None
    return convert(model)


def freeze_observers(model: nn.Module) -> nn.Module:
    """Stop updating every observer's range in a QAT model (fake-quantization stays on).

    Late in QAT, fixed ranges let the weights settle to the grid they will be converted on.
    """
    _require_prepared(model, "freeze_observers")
    model.apply(tq.disable_observer)
    return model


def freeze_batchnorm_stats(model: nn.Module) -> nn.Module:
    """Stop updating BatchNorm running statistics in a QAT-fused model; training goes on with them."""
    _require_prepared(model, "freeze_batchnorm_stats")
    model.apply(nniqat.freeze_bn_stats)
    return model


def is_observer(module: nn.Module) -> bool:
    """Whether ``module`` is an observer ``prepare`` inserted (its owner's output grid is recorded there)."""
    return isinstance(module, tq.ObserverBase)


def is_fused_block(module: nn.Module) -> bool:
    """Whether ``module`` is a fused conv/linear block (``ConvReLU2d``...), float or prepared."""
    return isinstance(module, nni._FusedModule)


def is_quant_stub(module: nn.Module) -> bool:
    return isinstance(module, QuantStub)


def is_dequant_stub(module: nn.Module) -> bool:
    return isinstance(module, DeQuantStub)


def fixed_output_grid(module: nn.Module) -> tuple[float, int] | None:
    """``(scale, zero_point)`` of a prepared layer whose int8 output grid is fixed (sigmoid, hardsigmoid), else
    ``None``: its fixed-qparams observer's, or, unobserved, the grid torch's quint8 kernels give ([0, 1] in 256 steps)."""
    observer = module._modules.get("activation_post_process")
    if isinstance(observer, tq.FixedQParamsObserver):
        return float(observer.scale), int(observer.zero_point)
    if observer is None and isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)):
        return 1.0 / 256, 0
    return None


def is_int8(model: nn.Module) -> bool:
    """Whether ``model`` was converted to int8 by qzoo (``convert`` or ``int8_skeleton``)."""
    return record_of(model).mode == "int8"


def require_int8(model: nn.Module, caller: str) -> str:
    """The backend of an int8 ``model``; a ``ValueError`` naming the PTQ steps for any other model."""
    backend = model_backend(model)
    if not is_int8(model) or backend is None:
        raise ValueError(f"{caller} takes an int8 model: run qzoo.prepare_ptq, qzoo.calibrate and "
                         "qzoo.convert first (or load one with quantize=True / qzoo.from_pretrained)")
    return backend


# ---------------------------------------------------------------------------- int8, simulated in float

def simulation_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of a calibrated PTQ-prepared model that int8 quantizes, by module name: each conv,
    linear, fused block, ``FloatFunctional`` and ``QuantStub`` whose output observer saw data."""
    _require_prepared(model, "the int8 simulation (qzoo.sensitivity, bias correction)")
    layers = {}
    for name, module in model.named_modules():
        observer = module._modules.get("activation_post_process")
        if isinstance(observer, tq.ObserverBase) and not isinstance(module, tq.ObserverBase):
            low = getattr(observer, "min_val", None)  # none: fixed qparams (hardsigmoid, sigmoid)
            if low is None or (low.numel() > 0 and torch.isfinite(low).all()):
                layers[name] = module
    if not layers:
        raise RuntimeError("simulation needs a calibrated PTQ model: run qzoo.calibrate(model, batches) first "
                           "(a QAT model simulates int8 by itself)")
    return layers


def _simulated_weight(module: nn.Module) -> tuple[nn.Parameter, Tensor] | None:
    """A layer's weight and its fake-quantized copy, quantized as ``convert`` will (the qconfig's weight observer)."""
    inner = module[0] if isinstance(module, nni._FusedModule) else module
    weight = getattr(inner, "weight", None)
    if not isinstance(inner, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) or weight is None:
        return None
    observer = module.qconfig.weight()
    observer(weight.detach())
    scale, zero_point = observer.calculate_qparams()
    if observer.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
        quantized = torch.fake_quantize_per_channel_affine(weight.detach(), scale.float(), zero_point.int(),
                                                           observer.ch_axis, observer.quant_min, observer.quant_max)
    else:
        quantized = torch.fake_quantize_per_tensor_affine(weight.detach(), float(scale), int(zero_point),
                                                          observer.quant_min, observer.quant_max)
    return weight, quantized


_AVERAGING = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AvgPool1d, nn.AvgPool2d,
              nn.AvgPool3d)


class Int8Simulation:
    """A calibrated PTQ-prepared model run as its int8 conversion computes, in float, layer by layer.

    Inside :meth:`quantizing`, each chosen layer (names from :func:`simulation_layers`) rounds its
    weight as ``convert`` will and its output to the calibrated scale over the kernel's full 8-bit
    codes; every other layer runs in float. An average pool fed directly by a quantized layer
    rounds its output to that layer's grid, as the int8 pool does (squeeze-excitation's pooled
    values are small beside their scale: leaving this out hides a real int8 error). Observers
    record nothing meanwhile and weights are put back on exit. Left out: the bias's int32
    rounding, ties the kernels break differently. Scales are computed once, here.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = simulation_layers(model)
        self._grids: dict[str, tuple[float, int, torch.dtype]] = {}
        self._weights: dict[str, tuple[nn.Parameter, Tensor]] = {}
        self._latest: tuple[Tensor, tuple[float, int, torch.dtype]] | None = None
        with torch.no_grad():
            for name, module in self.layers.items():
                observer = module.activation_post_process
                scale, zero_point = observer.calculate_qparams()
                self._grids[name] = (float(scale), int(zero_point), observer.dtype)
                simulated = _simulated_weight(module)
                if simulated is not None:
                    self._weights[name] = simulated

    def _round_output(self, grid: tuple[float, int, torch.dtype], x: Tensor) -> Tensor:
        rounded = _round_to_int8(x, *grid)
        self._latest = (rounded, grid)
        return rounded

    def _round_average(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor | None:
        if self._latest is not None and args[0] is self._latest[0]:
            return _round_to_int8(output, *self._latest[1])
        return None

    @contextlib.contextmanager
    def quantizing(self, quantized: Iterable[str]) -> Iterator[None]:
        """Within the block, the layers named in ``quantized`` compute as int8, the others in float."""
        chosen = set(quantized)
        unknown = chosen - set(self.layers)
        if unknown:
            raise ValueError(f"no quantized layer named {sorted(unknown)[:3]}: choose among the simulation's layers")
        swapped = []
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(routine_warnings_silenced())  # quint8 tensors: a routine warning from torch 2.13
            for name, module in self.layers.items():
                rounding = functools.partial(self._round_output, self._grids[name])
                module.activation_post_process.forward = rounding if name in chosen else _passthrough
                if name in chosen and name in self._weights:
                    weight, rounded = self._weights[name]
                    swapped.append((weight, weight.data))
                    weight.data = rounded
            for module in self.model.modules():
                if isinstance(module, _AVERAGING):
                    stack.callback(module.register_forward_hook(self._round_average).remove)
            yield
        finally:
            stack.close()
            self._latest = None
            for module in self.layers.values():
                module.activation_post_process.__dict__.pop("forward", None)
            for weight, original in swapped:
                weight.data = original


def _passthrough(x: Tensor) -> Tensor:
    return x


def _round_to_int8(x: Tensor, scale: float, zero_point: int, dtype: torch.dtype) -> Tensor:
    """``x`` on the int8 grid, every code of ``dtype`` allowed (as the kernels write them): torch's own
    quantize and dequantize, the same values as ``fake_quantize_per_tensor_affine`` over that range
    and about 3x faster."""
    return torch.quantize_per_tensor(x, scale, zero_point, dtype).dequantize()
