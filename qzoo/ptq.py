"""Post-training quantization in one call, with the accuracy methods: :func:`quantize`.

It sits above :mod:`qzoo.quantization` (prepare, calibrate, convert), :mod:`qzoo.equalization` and
:mod:`qzoo.bias_correction`, which build on that module, so the one-call form lives here.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from typing import Any

from torch import nn

from . import equalization, pt2e, quantization
from .bias_correction import correct_bias

__all__ = ["quantize"]


def quantize(model: nn.Module, data: Iterable[Any], *, backend: str = quantization.DEFAULT_BACKEND,
             num_batches: int | None = None, qconfig: quantization.QConfig | None = None, inplace: bool = False,
             progress: bool = True, relu6_range: bool = True, float_layers: Iterable[str] = (),
             equalize: bool = False, bias_correction: bool = False, correction_images: int = 64,
             float_logits: bool = False, flow: str = "eager") -> nn.Module:
    """Post-training quantization in one call: prepare, calibrate on ``data``, convert to int8.

    ``model`` is a float model (a qzoo factory's, or any module with stubs and optionally
    ``fuse_model``); it is left as it was unless ``inplace=True`` (then a failure after preparing it leaves it
    fused and observed, and the error's note says so). ``data`` and ``num_batches``
    are :func:`qzoo.calibrate`'s; ``qconfig`` overrides qzoo's preset for ``backend``;
    ``relu6_range`` and ``float_layers`` are :func:`qzoo.prepare_ptq`'s. ``equalize`` first runs
    cross-layer equalization and high-bias absorption on the float model
    (:mod:`qzoo.equalization`); ``bias_correction`` corrects each layer's bias after calibration on
    the first ``correction_images`` calibration images (:mod:`qzoo.bias_correction`). ``float_logits``
    leaves the output layer's sum unrounded (:func:`qzoo.float_logits`): no ties among the logits.

    ``flow="pt2e"`` (experimental, ``pip install "qzoo[pt2e]"``) quantizes the same float model
    through ``torch.export`` and torchao instead, and returns a :class:`qzoo.pt2e.Pt2eModel`
    compiled by inductor (docs/pt2e.md); it takes ``equalize``, ``num_batches`` and ``progress``.
    """
    float_layers = tuple(float_layers)
    use_pt2e = pt2e.check_flow(flow, "quantize", backend, qconfig=qconfig is not None, inplace=inplace,
                               relu6_range=not relu6_range, float_layers=bool(float_layers),
                               bias_correction=bias_correction, float_logits=float_logits)
    float_model = model if inplace else copy.deepcopy(model)
    if equalize:
        pairs = equalization.equalize(float_model)
        equalization.absorb_high_bias(float_model, pairs)
    if use_pt2e:
        return pt2e.quantize(float_model, data, num_batches=num_batches, progress=progress)
    prepared = quantization.prepare_ptq(float_model, backend, qconfig, relu6_range=relu6_range,
                                        float_layers=float_layers)
    try:
        if bias_correction:
            data = list(itertools.islice(data, num_batches))  # read twice: calibration, then correction
        quantization.calibrate(prepared, data, num_batches, progress=progress)
        if bias_correction:
            correct_bias(prepared, data, max_images=correction_images, progress=progress)
        int8 = quantization.convert(prepared)
    except BaseException as error:
        if inplace:  # a copy is simply dropped; the caller's own model is what changed
            error.add_note("qzoo.quantize(inplace=True) stopped after preparing the model: it is now fused and "
                           "observed, not the float model passed in. Build it again, or pass inplace=False.")
        raise
    return quantization.float_logits(int8) if float_logits else int8
