"""Training-side helpers shared by calibration, QAT and the tests."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def refresh_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> nn.Module:
    """Recompute every BatchNorm's running statistics from ``batches`` (a cumulative average).

    Weights are untouched and the model's train/eval mode is restored. A freshly initialised
    network has mean-0/var-1 statistics that make its eval-mode output nearly constant; this
    gives it realistic activations for numeric checks and demos.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return model
