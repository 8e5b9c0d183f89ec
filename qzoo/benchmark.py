"""Latency and size measurements taken side by side, for ratios that survive a noisy machine."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn


def interleaved_latency_ms(
    runners: Mapping[str, Callable[[Tensor], object]], inputs: Tensor, *, repeats: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median milliseconds per call of each runner, called round-robin so they share the same noise."""
    with torch.inference_mode():
        for _ in range(warmup):
            for run in runners.values():
                run(inputs)
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run(inputs)
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(times) for name, times in samples.items()}


def state_dict_bytes(model: nn.Module) -> int:
    """Size of ``model``'s state_dict as ``torch.save`` writes it (a measurement, never loaded back)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
