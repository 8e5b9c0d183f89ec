"""The workflow steps that choose a flow: eager mode (:mod:`qzoo.quantization`) or PT2E (:mod:`qzoo.pt2e`).

``qzoo.prepare_qat`` and ``qzoo.convert`` are these (``qzoo.quantize``, in :mod:`qzoo.ptq`, chooses
too); qzoo's own code calls the eager steps of :mod:`qzoo.quantization` directly.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from . import pt2e, quantization

__all__ = ["convert", "prepare_qat"]


def prepare_qat(model: nn.Module, backend: str = quantization.DEFAULT_BACKEND,
                qconfig: quantization.QConfig | None = None, *, relu6_range: bool = True,
                float_layers: Iterable[str] = (), flow: str = "eager", example: Tensor | None = None) -> nn.Module:
    """Fuse for QAT (if the model has ``fuse_model``) and insert fake-quant modules.

    Returns ``model`` itself (changed in place) in train mode, ready to fine-tune, then :func:`convert`.
    ``relu6_range`` and ``float_layers`` as in :func:`qzoo.prepare_ptq`. ``flow="pt2e"`` (experimental, ``qzoo[pt2e]``)
    instead captures a copy of the float model at ``example``'s image size through ``torch.export``
    and returns a :class:`qzoo.pt2e.Pt2eQatModel` (``model`` itself is left as it was).
    """
    float_layers = tuple(float_layers)
    if pt2e.check_flow(flow, "prepare_qat", backend, qconfig=qconfig is not None, relu6_range=not relu6_range,
                       float_layers=bool(float_layers)):
        return pt2e.prepare_qat(model, example)
    return quantization.prepare_qat(model, backend, qconfig, relu6_range=relu6_range, float_layers=float_layers)


def convert(model: nn.Module) -> nn.Module:
    """Convert a calibrated (PTQ) or trained (QAT) model to int8 under its backend, in eval mode
    (:func:`qzoo.quantization.convert`: refused if its observers never saw data; audited after).
    A :class:`qzoo.pt2e.Pt2eQatModel` becomes a :class:`qzoo.pt2e.Pt2eModel` (``convert_pt2e``).
    In place, as every step of the workflow: the prepared model is gone afterwards. To evaluate int8
    during QAT and go on training, convert a ``copy.deepcopy`` (:func:`qzoo.train.int8_copy` for the eager flow).
    """
    if isinstance(model, pt2e.Pt2eQatModel):
        return pt2e.convert(model)
    return quantization.convert(model)
