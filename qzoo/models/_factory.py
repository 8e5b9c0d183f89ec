"""What every qzoo factory does: resolve weights, build, load float weights, then prepare or convert."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from torch import nn
from torchvision.models import WeightsEnum

from .. import quantization, serialization
from .. import weights as qzoo_weights

Prepare = Literal["ptq", "qat"] | None
WeightsArg = WeightsEnum | str | None


def resolve_float_weights(enum: type[WeightsEnum], weights: WeightsArg) -> WeightsEnum | None:
    """Map ``None``, ``"DEFAULT"``, a member name or a member of ``enum`` to that member."""
    if weights is None:
        return None
    names = ", ".join(["DEFAULT", *enum.__members__])
    if isinstance(weights, WeightsEnum):
        if not isinstance(weights, enum):
            raise ValueError(
                f"weights={weights} belongs to another architecture; this model takes "
                f"{enum.__name__} ({names})"
            )
        return weights
    if isinstance(weights, str):
        prefix, _, member = weights.rpartition(".")
        if prefix in ("", enum.__name__) and member in enum.__members__:
            return enum[member]
        raise ValueError(f"unknown weights {weights!r} for this model; choose one of {enum.__name__}: {names}")
    raise TypeError(f"weights must be None, a string or a {enum.__name__} member, not {type(weights).__name__}")


def fixed_kwargs(kwargs: dict[str, Any], **fixed: Any) -> dict[str, Any]:
    """Add architecture-defining arguments (``groups``, ``width_per_group``); refuse a conflicting value."""
    for key, value in fixed.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"{key}={kwargs[key]} conflicts with this architecture, which fixes {key}={value}")
        kwargs[key] = value
    return kwargs


ARCHITECTURE_ATTR = "_qzoo_architecture"
KWARGS_ATTR = "_qzoo_kwargs"
WEIGHTS_ATTR = "_qzoo_weights"


def build(
    constructor: Callable[..., nn.Module],
    weights_enum: type[WeightsEnum],
    *,
    weights: WeightsArg,
    prepare: Prepare,
    quantize: bool,
    backend: str | None,
    progress: bool,
    **kwargs: Any,
) -> nn.Module:
    """Build a quantizable model in the state the factory arguments ask for (see the README's table).

    The model remembers its architecture name, keyword arguments and weights entry, so
    ``qzoo.save_pretrained`` can write a config that rebuilds it.
    """
    if backend is not None:
        quantization._check_backend(backend)
    if prepare not in (None, "ptq", "qat"):
        raise ValueError(f"prepare={prepare!r}: use None (float), 'ptq' or 'qat'")
    if quantize and prepare is not None:
        raise ValueError(
            f"quantize=True returns a converted int8 model, so prepare={prepare!r} cannot apply: "
            f"use prepare={prepare!r} alone, then qzoo.calibrate/train and qzoo.convert"
        )
    architecture = qzoo_weights.architecture_of(weights_enum)
    if quantize:
        model = _pretrained_int8(constructor, architecture, weights, backend, progress, kwargs)
    else:
        model = _float(constructor, weights_enum, weights, prepare, backend or "x86", progress, kwargs)
    setattr(model, ARCHITECTURE_ATTR, architecture)
    setattr(model, KWARGS_ATTR, dict(kwargs))
    return model


def _check_classes(kwargs: dict[str, Any], classes: int, weights: object) -> None:
    if kwargs.setdefault("num_classes", classes) != classes:
        raise ValueError(
            f"weights={weights} have {classes} classes but num_classes={kwargs['num_classes']}: "
            "build without weights, or load these weights and replace the classifier yourself"
        )


def _float(constructor: Callable[..., nn.Module], weights_enum: type[WeightsEnum], weights: WeightsArg,
           prepare: Prepare, backend: str, progress: bool, kwargs: dict[str, Any]) -> nn.Module:
    float_weights = resolve_float_weights(weights_enum, weights)
    if float_weights is not None:
        _check_classes(kwargs, len(float_weights.meta["categories"]), float_weights)
    model = constructor(**kwargs).eval()
    if float_weights is not None:
        state = float_weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
        model.load_state_dict(state)
        setattr(model, WEIGHTS_ATTR, f"{qzoo_weights.architecture_of(weights_enum)}.{float_weights.name.lower()}")
    if prepare == "ptq":
        quantization.prepare_ptq(model, backend)
    elif prepare == "qat":
        quantization.prepare_qat(model, backend)
    return model


def _pretrained_int8(constructor: Callable[..., nn.Module], architecture: str, weights: WeightsArg,
                     backend: str | None, progress: bool, kwargs: dict[str, Any]) -> nn.Module:
    if isinstance(weights, WeightsEnum):
        weights = f"{architecture}.{weights.name.lower()}"
    if weights is not None and not isinstance(weights, str):
        raise TypeError(f"weights must be None, a weights name or a torchvision weights member, not {type(weights).__name__}")
    entry = qzoo_weights.int8_weights(architecture, weights, backend)
    if entry.url is None:
        raise ValueError(f"{entry.name} are published as a qzoo folder: load them with "
                         f"qzoo.from_pretrained({entry.name!r}) or qzoo.get_model({entry.name!r})")
    _check_classes(kwargs, int(entry.kwargs["num_classes"]), entry.name)
    model = quantization.int8_skeleton(constructor(**kwargs).eval(), entry.backend or "x86")
    state = qzoo_weights.load_url_state(entry, progress=progress)
    serialization.load_int8_state(model, state, entry.name)
    setattr(model, WEIGHTS_ATTR, entry.name)
    return model
