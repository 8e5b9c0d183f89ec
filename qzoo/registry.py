"""Model names -> factories: ``list_models`` and ``get_model``, the one front door by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from . import models, weights

_FACTORIES: Mapping[str, Callable[..., nn.Module]] = MappingProxyType(
    {
        factory.__name__: factory
        for factory in (
            models.resnet18,
            models.resnet34,
            models.resnet50,
            models.resnet101,
            models.resnet152,
            models.resnext50_32x4d,
            models.resnext101_32x8d,
            models.resnext101_64x4d,
            models.wide_resnet50_2,
            models.wide_resnet101_2,
            models.mobilenet_v2,
        )
    }
)


def list_models(pretrained: bool = False) -> list[str]:
    """Names of every model qzoo can build, sorted; with ``pretrained=True`` the weights entries
    (``architecture.tag``, as timm lists them), which ``qzoo.from_pretrained`` loads by name."""
    return weights.list_weights() if pretrained else sorted(_FACTORIES)


def get_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``; an unknown name raises ``ValueError`` with suggestions."""
    try:
        return _FACTORIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_FACTORIES), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown model {name!r}; {hint}`qzoo list` (qzoo.list_models()) lists all {len(_FACTORIES)}") from None


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with the factory's keyword arguments (weights, prepare, quantize, backend, ...)."""
    return get_factory(name)(**kwargs)
