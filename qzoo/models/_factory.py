"""What every qzoo factory does: resolve weights, build, load float weights, then prepare or convert."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from torch import nn
from torchvision.models import WeightsEnum

from .. import quantization

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


def build(
    constructor: Callable[..., nn.Module],
    weights_enum: type[WeightsEnum],
    *,
    weights: WeightsArg,
    prepare: Prepare,
    quantize: bool,
    backend: str,
    progress: bool,
    **kwargs: Any,
) -> nn.Module:
    """Build a quantizable model in the state the factory arguments ask for (see the README's table)."""
    quantization._check_backend(backend)
    if prepare not in (None, "ptq", "qat"):
        raise ValueError(f"prepare={prepare!r}: use None (float), 'ptq' or 'qat'")
    if quantize and prepare is not None:
        raise ValueError(
            f"quantize=True returns a converted int8 model, so prepare={prepare!r} cannot apply: "
            f"use prepare={prepare!r} alone, then qzoo.calibrate/train and qzoo.convert"
        )
    float_weights = resolve_float_weights(weights_enum, weights)
    if quantize and float_weights is not None:
        raise ValueError(
            f"{float_weights} are float weights; there is no calibration data here to make int8 from "
            "them: build with prepare='ptq', run qzoo.calibrate(model, batches), then qzoo.convert(model)"
        )
    if float_weights is not None:
        classes = len(float_weights.meta["categories"])
        if kwargs.setdefault("num_classes", classes) != classes:
            raise ValueError(
                f"weights={float_weights} have {classes} classes but num_classes={kwargs['num_classes']}: "
                "build without weights, or load these weights and replace the classifier yourself"
            )
    model = constructor(**kwargs).eval()
    if float_weights is not None:
        state = float_weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
        model.load_state_dict(state)
    if prepare == "ptq":
        quantization.prepare_ptq(model, backend)
    elif prepare == "qat":
        quantization.prepare_qat(model, backend)
    elif quantize:
        quantization.int8_skeleton(model, backend)
    return model
