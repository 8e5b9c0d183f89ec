"""Empirical bias correction of a calibrated PTQ model (Nagel et al. 2019, AIMET's empirical variant).

Rounding a layer's weights (and the int8 inputs it receives) shifts the mean of its output:
per-tensor weights most, since small channels lose the most relative precision. The shift
accumulates through the network. Correction measures, on calibration images, each conv's and
linear's mean output per channel in float and as int8 computes it (every layer before it int8 and
already corrected), and subtracts the difference from the layer's bias: the layer's output mean
then matches float again. Two passes over the images do it all: a float pass records every
layer's mean, and an int8 pass corrects each layer as it runs, so the layers after it see its
corrected output. It works on the prepared model before ``convert``, so the corrected
biases are what the int8 model stores. int8 is simulated in float
(:class:`qzoo.quantization.Int8Simulation`); the float model's own function changes only by the
bias shifts, which are the point.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._record import note_ptq_method, record_of
from .data import batch_images
from .quantization import Int8Simulation

__all__ = ["correct_bias"]

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _weighted_part(module: nn.Module) -> nn.Module | None:
    """The conv or linear that computes a quantized layer (the first child of a fused block)."""
    inner = module[0] if isinstance(module, nn.Sequential) and len(module) else module
    return inner if isinstance(inner, _WEIGHTED) and inner.bias is not None else None


def _first_images(batches: Iterable[Any], count: int | None) -> list[Tensor]:
    """The image tensors of ``batches`` up to ``count`` images in all (the last batch cut to fit)."""
    if count is not None and count < 1:
        raise ValueError(f"max_images must be a positive number of images, got {count}")
    images: list[Tensor] = []
    taken = 0
    for index, batch in enumerate(batches):
        batch = batch_images(batch, index)
        if count is not None:
            batch = batch[:count - taken]
        images.append(batch)
        taken += batch.shape[0]
        if count is not None and taken >= count:
            break
    return images


def _channel_mean(output: Tensor) -> Tensor:
    return output.detach().double().transpose(0, 1).flatten(1).mean(1)


def _record_mean(means: dict[str, Tensor], name: str, module: nn.Module, args: Any, output: Tensor) -> None:
    means[name] = _channel_mean(output)


def _corrected(reference: dict[str, Tensor], changes: dict[str, float], name: str, module: nn.Module, args: Any,
               output: Tensor) -> Tensor:
    """Shift the layer's bias so its mean output matches float, and hand on the output it now computes."""
    shift = (_channel_mean(output) - reference[name]).to(output.dtype)
    module.bias.sub_(shift)
    changes[name] = float(shift.abs().max())
    return output - shift.reshape(-1, *([1] * (output.dim() - 2)))


@torch.no_grad()
def correct_bias(model: nn.Module, batches: Iterable[Any], *, max_images: int | None = None,
                 progress: bool = True) -> dict[str, float]:
    """Correct the bias of every quantized conv and linear of a calibrated PTQ-prepared ``model``, in place.

    ``batches``: images (tensors or ``(images, targets)`` pairs), of which the first ``max_images``
    are used, as one batch: one float pass measures every layer's mean output, then one int8 pass
    corrects each layer as it runs, so the layers after it see its corrected output. Returns, per
    layer name, the largest bias change applied. Layers kept float (``float_layers``) and layers
    without a bias are left alone.
    """
    if "bias_correction" in record_of(model).ptq_methods:
        raise RuntimeError("correct_bias runs once per model: its float reference is the model's own float "
                           "function, which the first correction changed; start again from the calibrated model")
    images = _first_images(batches, max_images)
    if not images:
        raise ValueError("correct_bias needs at least one batch of calibration images")
    batch = torch.cat(images)
    simulation = Int8Simulation(model)
    weighted = {name: part for name, module in simulation.layers.items()
                if (part := _weighted_part(module)) is not None}
    reference: dict[str, Tensor] = {}
    changes: dict[str, float] = {}
    passes = ((functools.partial(_record_mean, reference), ()),
              (functools.partial(_corrected, reference, changes), simulation.layers))
    for hook, quantized in tqdm(passes, desc="bias correction", unit="pass", disable=not progress):
        handles = [layer.register_forward_hook(functools.partial(hook, name)) for name, layer in weighted.items()]
        try:
            with simulation.quantizing(quantized):
                model(batch)
        finally:
            for handle in handles:
                handle.remove()
    note_ptq_method(model, "bias_correction")
    return changes
