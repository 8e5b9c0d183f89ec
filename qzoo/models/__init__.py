"""Quantizable model families, one module each; every module here is imported and registered.

A new family is one new file: its ``Quantizable*`` classes, its builders under
``@register_model``, and an ``__all__`` naming what ``qzoo`` exports from it.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from ._factory import register_model


def _import_families() -> dict[str, Any]:
    """Import every family module (in name order) and collect the names each exports."""
    exports: dict[str, Any] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name in module.__all__:  # a shared block (from _blocks) may be exported by each family using it
            if name in exports and exports[name] is not getattr(module, name):
                raise ImportError(f"qzoo.models.{info.name} exports {name!r}, which another family exports too")
            exports[name] = getattr(module, name)
    return exports


FAMILY_EXPORTS: dict[str, Any] = _import_families()
"""Every family's ``__all__``: its classes and factories, re-exported by ``qzoo``."""

__all__ = ["FAMILY_EXPORTS", "register_model", *FAMILY_EXPORTS]
globals().update(FAMILY_EXPORTS)
