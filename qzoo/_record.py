"""One record of what a qzoo model is: architecture, arguments, weights, backend and mode.

Factories write the first three, ``qzoo.quantization`` the rest as the model is fused, prepared
and converted; saving, loading, export and the CLI read it. It is a frozen value kept in one
attribute, so ``copy.deepcopy`` carries it and no step can half-update it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

Mode = Literal["float", "ptq", "qat", "int8"]
"""``float`` (maybe fused), ``ptq``/``qat`` (prepared: observers or fake-quant inserted), ``int8`` (converted)."""

_ATTR = "_qzoo_record"


@dataclass(frozen=True)
class ModelRecord:
    """What qzoo knows about a model; :func:`qzoo.model_record` reads it."""

    architecture: str | None = None
    """The registered model name that rebuilds it (``None``: not built by a qzoo factory)."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Architecture arguments (``num_classes``, ``width_mult``...) the factory was given."""
    weights: str | None = None
    """The weights entry loaded into it, or the folder/repo it came from."""
    backend: str | None = None
    """The quantized engine it was prepared or converted for; ``None`` while float."""
    mode: Mode = "float"
    fused: Literal["ptq", "qat"] | None = None
    """How its conv-bn(-relu) groups were fused: BatchNorm folded (``ptq``) or kept (``qat``)."""
    float_layers: tuple[str, ...] = ()
    """Layers kept in float inside the prepared or int8 model (``prepare_ptq(float_layers=...)``)."""
    float_logits: str | None = None
    """The int8 linear layer whose output is left unrounded (:func:`qzoo.float_logits`), if any."""
    ptq_methods: tuple[str, ...] = ()
    """Accuracy methods applied on the way to int8, in order (``equalization``, ``high_bias_absorption``,
    ``bias_correction``): their effect is in the weights; recorded so the model card can say so."""

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        return {**dataclasses.asdict(self), "kwargs": dict(self.kwargs), "float_layers": list(self.float_layers),
                "ptq_methods": list(self.ptq_methods)}


def record_of(module: nn.Module) -> ModelRecord:
    """The record of ``module`` (an empty float record for a module qzoo never touched)."""
    return getattr(module, _ATTR, None) or ModelRecord()


def update_record(module: nn.Module, **changes: Any) -> ModelRecord:
    """Replace fields of ``module``'s record and return the new record."""
    if "kwargs" in changes:
        changes["kwargs"] = dict(changes["kwargs"])
    record = dataclasses.replace(record_of(module), **changes)
    setattr(module, _ATTR, record)
    return record


def note_ptq_method(module: nn.Module, method: str) -> None:
    """Add ``method`` to the PTQ accuracy methods ``module``'s record lists (once, in order)."""
    methods = record_of(module).ptq_methods
    if method not in methods:
        update_record(module, ptq_methods=(*methods, method))
