"""What every qzoo factory does, and the decorator that makes a model builder a registered factory.

A family file defines its ``Quantizable*`` classes and, per model, a small builder that returns
the float model from architecture arguments. ``@register_model`` registers it (:mod:`qzoo.registry`)
and turns it into the public factory: keyword-only ``weights``, ``prepare``, ``quantize``,
``backend``, ``progress``; weights resolved once (:mod:`qzoo.pretrained`), downloaded through the
verified fetch, loaded; then the model prepared or converted as asked.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import torch
from torch import nn
from torchvision.models import WeightsEnum

from .. import _files, ptq, quantization, registry, serialization
from .._record import update_record
from ..pretrained import Weights, index_entries, resolve_float, resolve_int8
from ..registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

Prepare = Literal["ptq", "qat"] | None
Model = TypeVar("Model", bound=nn.Module)


class _Auto:
    """The default of every factory's ``weights``: see ``weights`` in :data:`FACTORY_ARGUMENTS`."""

    def __repr__(self) -> str:
        return "AUTO"


AUTO = _Auto()
WeightsArg = WeightsEnum | Weights | str | _Auto | None

_WORKFLOW_ARGUMENTS = ("weights", "prepare", "quantize", "backend", "progress")

FACTORY_ARGUMENTS = """
Arguments (keyword-only, the same for every qzoo factory):
    weights: ``None`` (random init), ``"DEFAULT"``, {float_choices}a weights entry name
        (``qzoo.list_weights("{name}")``). Files are downloaded once, verified against their
        sha256 on every load and read without unpickling code. The default, ``AUTO``, means
        ``None``, except with ``quantize=True`` and no architecture argument: then the
        published int8 weights.
    prepare: ``None``: float model, unfused, in train mode like every new ``nn.Module`` (call
        ``.eval()`` for inference). ``"ptq"``: fused, observers inserted, eval mode (then
        ``qzoo.calibrate`` and ``qzoo.convert``, or ``qzoo.quantize`` in one call). ``"qat"``:
        fused for QAT, fake-quant inserted, train mode (fine-tune, then ``qzoo.convert``).
    quantize: ``True`` returns an int8 model in eval mode: with ``weights`` unset (and no
        architecture argument) or naming an int8 entry (``"DEFAULT"``: the default for
        ``backend``), the pretrained one; with ``weights=None``, or architecture arguments
        such as ``num_classes=5``, a random-init model calibrated on synthetic images, as
        ``torchvision.models.quantization`` builds it. {int8_note}
    backend: ``"x86"`` (the default), ``"fbgemm"``, ``"qnnpack"`` or ``"onednn"``, for ``prepare`` or
        ``quantize=True`` (a float model has none); with ``quantize=True``, ``None`` means the int8 weights'
        own backend.
    progress: show a progress bar while downloading.
    **kwargs: architecture arguments of the model ({kwargs}).

Input: float32 RGB images ``(N, 3, H, W)`` on the CPU, normalised with mean {mean} and std
{std}; the pretrained weights expect a resize to {resize} pixels and a centre crop of {crop}.
Conflicting arguments raise ``ValueError`` naming the fix.
"""


def _document(builder: Callable[..., nn.Module], spec: ModelSpec, architecture_arguments: str) -> str:
    own_int8 = [entry.name for entry in index_entries() if entry.architecture == spec.name and entry.mode == "int8"]
    if spec.int8_weights:
        int8_note = f"Published int8 weights: ``{spec.int8_weights.__name__}``."
    elif own_int8:
        int8_note = f"qzoo's int8 weights load with ``qzoo.from_pretrained({own_int8[0]!r})``."
    else:
        int8_note = "None are published for this model: use ``prepare='ptq'`` and calibrate."
    float_choices = (f"a member name of ``{spec.float_weights.__name__}`` "
                     f"(``\"{next(iter(spec.float_weights.__members__))}\"``), a member itself, or "
                     if spec.float_weights else "")
    resize, crop = spec.input_size
    section = FACTORY_ARGUMENTS.format(
        float_choices=float_choices, name=spec.name, int8_note=int8_note, kwargs=architecture_arguments,
        mean=spec.normalization[0], std=spec.normalization[1], resize=resize, crop=crop)
    return inspect.cleandoc(builder.__doc__ or spec.name) + "\n" + section


def register_model(*, float_weights: type[WeightsEnum] | None, int8_weights: type[WeightsEnum] | None = None,
                   published_with: dict[str, Any] | None = None, input_size: tuple[int, int] | None = None,
                   convert_state: Callable[[dict[str, Any], nn.Module], dict[str, Any]] | None = None,
                   normalization: tuple[tuple[float, ...], tuple[float, ...]] = (IMAGENET_MEAN, IMAGENET_STD),
                   arguments: str = "num_classes and the float class's own arguments"
                   ) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Make ``builder(**kwargs) -> float model`` the registered factory of the same name.

    ``float_weights``: torchvision's float weights enum for the architecture (``None`` if it has
    none); ``int8_weights``: torchvision's quantized weights enum, when one is published;
    ``published_with``: architecture arguments the published files were made for, applied when
    loading them unless the user gives their own (as torchvision's factories do);
    ``input_size``: (resize, centre crop) when there is no torchvision enum to read it from;
    ``normalization``: (mean, std) of the inputs the default weights expect;
    ``convert_state``: maps files in another library's layout (entries with a ``layout``) onto
    the model's names, every key checked;
    ``arguments``: the architecture arguments to name in the factory's documentation.
    """

    def decorate(builder: Callable[..., Model]) -> Callable[..., Model]:
        @functools.wraps(builder)
        def factory(*, weights: WeightsArg = AUTO, prepare: Prepare = None, quantize: bool = False,
                    backend: str | None = None, progress: bool = True, **kwargs: Any) -> Model:
            model = build(spec, builder, weights=weights, prepare=prepare, quantize=quantize, backend=backend,
                          progress=progress, kwargs=kwargs)
            return model  # type: ignore[return-value]

        own = inspect.signature(factory, follow_wrapped=False)
        factory.__signature__ = own.replace(return_annotation=inspect.signature(builder).return_annotation)  # type: ignore[attr-defined]
        del factory.__wrapped__  # help() shows the factory's arguments, not the builder's
        spec = registry.add_model(ModelSpec(builder.__name__, factory, builder.__module__, float_weights,
                                            int8_weights, dict(published_with or {}), native_input=input_size,
                                            convert_state=convert_state, normalization=normalization))
        factory.__doc__ = _document(builder, spec, arguments)
        return factory

    return decorate


def fixed_kwargs(kwargs: dict[str, Any], **fixed: Any) -> dict[str, Any]:
    """Add architecture-defining arguments (``groups``, ``width_per_group``); refuse a conflicting value."""
    for key, value in fixed.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"{key}={kwargs[key]} conflicts with this architecture, which fixes {key}={value}")
        kwargs[key] = value
    return kwargs


def build(spec: ModelSpec, builder: Callable[..., nn.Module], *, weights: WeightsArg, prepare: Prepare,
          quantize: bool, backend: str | None, progress: bool, kwargs: dict[str, Any]) -> nn.Module:
    """Build a model in the state the factory arguments ask for (see :data:`FACTORY_ARGUMENTS`).

    The model's record (:func:`qzoo.model_record`) holds its architecture, arguments and weights
    entry, so ``qzoo.save_pretrained`` can write a config that rebuilds it.
    """
    if backend is not None:
        quantization.check_backend(backend)
    if prepare not in (None, "ptq", "qat"):
        raise ValueError(f"prepare={prepare!r}: use None (float), 'ptq' or 'qat'")
    if quantize and prepare is not None:
        raise ValueError(
            f"quantize=True returns a converted int8 model, so prepare={prepare!r} cannot apply: "
            f"use prepare={prepare!r} alone, then qzoo.calibrate/train and qzoo.convert"
        )
    if backend is not None and not quantize and prepare is None:
        raise ValueError(f"backend={backend!r} applies with prepare='ptq', prepare='qat' or quantize=True; a float "
                         f"model has no backend: pass it to qzoo.quantize or qzoo.prepare_qat later")
    if quantize:
        if isinstance(weights, _Auto):  # torchvision's rule: arguments describe a model no published file fits
            weights = None if kwargs else "DEFAULT"
        entry = None if weights is None else resolve_int8(spec, weights, backend)
    else:
        entry = resolve_float(spec, None if isinstance(weights, _Auto) else weights)
    if entry is not None:
        if not entry.is_file:
            raise ValueError(f"{entry.name} are published as a qzoo folder: load them with "
                             f"qzoo.from_pretrained({entry.name!r})")
        _check_classes(kwargs, int(entry.kwargs["num_classes"]), entry.name)
        for key, value in spec.published_with.items():
            kwargs.setdefault(key, value)
    model = builder(**kwargs)
    update_record(model, architecture=spec.name, kwargs=kwargs, weights=entry.name if entry else None)
    if quantize and entry is None:
        return _random_int8(model, spec, backend or quantization.DEFAULT_BACKEND)
    if quantize:
        state, int8_backend = _read_file(entry, spec, model, progress), entry.backend or quantization.DEFAULT_BACKEND
        if quantization.is_qat_state(state):  # published as a QAT checkpoint (MobileNetV3-Large)
            return quantization.int8_from_qat_state(model, state, int8_backend, entry.name)
        quantization.int8_skeleton(model, int8_backend)
        serialization.load_int8_state(model, state, entry.name)
        return model
    if entry is not None:
        model.load_state_dict(_read_file(entry, spec, model, progress))
    if prepare == "ptq":
        quantization.prepare_ptq(model, backend or quantization.DEFAULT_BACKEND)
    elif prepare == "qat":
        quantization.prepare_qat(model, backend or quantization.DEFAULT_BACKEND)
    return model


def _check_classes(kwargs: dict[str, Any], classes: int, weights: str) -> None:
    if kwargs.setdefault("num_classes", classes) != classes:
        raise ValueError(
            f"weights={weights} have {classes} classes but num_classes={kwargs['num_classes']}: "
            "build without weights, or load these weights and replace the classifier yourself"
        )


def _read_file(entry: Weights, spec: ModelSpec, model: nn.Module, progress: bool) -> dict[str, Any]:
    """The state_dict of a file entry for ``model``, sha256-checked on every load: a URL fetched into
    torch.hub's cache, or a file of an installed pip package; in another library's names
    (``entry.layout``) it is mapped by the model's ``convert_state``. Published GoogLeNet files hold
    auxiliary heads: a model built without them (``aux_logits=False``: the head's attribute is
    ``None``) skips their tensors, as torchvision's factory does."""
    if entry.package is not None:
        assert entry.package_path is not None
        path = _files.installed_file(entry.package, entry.package_path, entry.sha256,
                                     purpose=f"the {entry.name} weights", extra=entry.package_extra or entry.package)
    else:
        assert entry.url is not None
        path = _files.fetch_verified(entry.url, entry.sha256, folder=_files.torch_hub_checkpoints(),
                                     filename=entry.filename, progress=progress)
    state = serialization.read_torch_checkpoint(path)
    if entry.layout is not None:
        if spec.convert_state is None:
            raise ValueError(f"{entry.name} is in {entry.layout}'s layout, which {spec.name} cannot read")
        return spec.convert_state(state, model)
    for key in [key for key in state if getattr(model, key.split(".", 1)[0], True) is None]:
        del state[key]  # in place: the module versions in the file's metadata stay with it
    return state


def _random_int8(model: nn.Module, spec: ModelSpec, backend: str) -> nn.Module:
    """A random-init int8 model: PTQ on two seeded random images at the model's input size.

    As torchvision's ``quantize=True`` without weights builds one (there from one random tensor):
    a structure with working scales, to test a pipeline or load an int8 ``state_dict`` into.
    """
    crop = spec.input_size[1]
    images = torch.randn(2, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    return ptq.quantize(model, [images], backend=backend, inplace=True, progress=False)
