"""Inputs for calibration and tests that need no download."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def synthetic_images(count: int, size: int = 64, *, seed: int = 0) -> Tensor:
    """``count`` smooth random RGB images, roughly ImageNet-normalized, reproducible from ``seed``.

    Low-frequency structure plus fine noise, so activations vary the way they do on photos.
    Useful to exercise quantization offline; they say nothing about accuracy.
    """
    if count < 1 or size < 8:
        raise ValueError(f"need count >= 1 and size >= 8, got count={count}, size={size}")
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, 3, 4, 4, generator=generator)
    fine = torch.randn(count, 3, size, size, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) + 0.25 * fine
