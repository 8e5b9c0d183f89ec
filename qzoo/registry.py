"""Every model qzoo builds, by name: the one front door (:func:`get_model`) and what it knows.

``@qzoo.register_model(float_weights=..., int8_weights=...)`` on a builder in ``qzoo/models/``
(:mod:`qzoo.models._factory`) adds a :class:`ModelSpec` here; the model list, the weights
catalogue (:mod:`qzoo.pretrained`), ``qzoo.__all__``, the CLI and the parametrized tests read
it. Importing ``qzoo`` imports every module of ``qzoo.models``, so the registry is complete
before anything reads it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torchvision.models import WeightsEnum

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: its factory and the torchvision weights enums it reads."""

    name: str
    factory: Callable[..., nn.Module]
    family: str
    """The module that defines it (``qzoo.models.resnet``)."""
    float_weights: type[WeightsEnum] | None
    int8_weights: type[WeightsEnum] | None = None
    published_with: dict[str, Any] = field(default_factory=dict, hash=False)
    """Architecture arguments the published weights were made for, used when the user gives none
    (GoogLeNet's ``transform_input=True``)."""
    native_input: tuple[int, int] | None = None
    """(resize, centre crop) for an architecture without torchvision weights (EfficientNet-Lite's sizes)."""
    normalization: tuple[tuple[float, ...], tuple[float, ...]] = (IMAGENET_MEAN, IMAGENET_STD)
    """(mean, std) of the inputs the default weights expect."""
    convert_state: Callable[[dict[str, Any], nn.Module], dict[str, Any]] | None = field(default=None, hash=False)
    """Maps a state_dict in another library's layout (a weights entry's ``layout``) onto the model's names."""

    @property
    def input_size(self) -> tuple[int, int]:
        """(resize, centre crop) of the default float weights' preprocessing; (256, 224) without weights."""
        if self.float_weights is None:
            return self.native_input or (256, 224)
        keywords = self.float_weights.DEFAULT.transforms.keywords
        return keywords.get("resize_size", 256), keywords.get("crop_size", 224)

    @property
    def min_size(self) -> int:
        """The smallest input side the architecture accepts (torchvision's ``min_size``; 1 if unknown)."""
        return self.float_weights.DEFAULT.meta.get("min_size", (1, 1))[0] if self.float_weights else 1


_MODELS: dict[str, ModelSpec] = {}


def add_model(spec: ModelSpec) -> ModelSpec:
    """Register ``spec`` (``qzoo.register_model`` calls this); a name taken by another module is refused."""
    existing = _MODELS.get(spec.name)
    if existing is not None and existing.family != spec.family:
        raise ValueError(f"model {spec.name!r} is already registered by {existing.family}; give the builder "
                         "another name")
    _MODELS[spec.name] = spec
    return spec


def model_specs() -> tuple[ModelSpec, ...]:
    """Every registered model, in name order."""
    return tuple(_MODELS[name] for name in sorted(_MODELS))


def model_spec(name: str) -> ModelSpec:
    """The registered model ``name``; an unknown name raises ``ValueError`` with suggestions."""
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown model {name!r}; {hint}`qzoo list` (qzoo.list_models()) lists all "
                         f"{len(_MODELS)}") from None


def model_names() -> list[str]:
    """Names of every registered model, sorted (``qzoo.list_models()``)."""
    return sorted(_MODELS)


def get_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``; an unknown name raises ``ValueError`` with suggestions."""
    return model_spec(name).factory


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with the factory's keyword arguments (weights, prepare, quantize, backend, ...)."""
    return get_factory(name)(**kwargs)
