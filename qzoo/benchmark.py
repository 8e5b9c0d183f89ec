"""Latency and size measurements taken side by side, for ratios that survive a noisy machine."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn


GLIBC_RAISED_THRESHOLDS = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=2147483648"
"""A ``GLIBC_TUNABLES`` value, set before Python starts, under which glibc's malloc serves blocks up to 1 GiB from
memory it keeps and keeps up to 2 GiB free for reuse, instead of mapping a large activation afresh on every call
(what that is worth: docs/benchmarks.md, the allocator table)."""

NOTABLE_PAGE_FAULTS = 1000
"""Page faults per call (4 MB of fresh 4 KB pages) above which a timing is the allocator's as much as the model's."""


def page_faults_per_call(model: Callable[[Tensor], object], inputs: Tensor) -> int | None:
    """Minor page faults of one call of ``model`` on ``inputs`` after a warm-up call: memory the allocator handed
    back and takes again on every call. ``None`` where the system does not count them (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    with torch.inference_mode():
        model(inputs)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        model(inputs)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def transparent_huge_pages(setting: Path = Path("/sys/kernel/mm/transparent_hugepage/enabled")) -> str:
    """Linux's transparent huge page mode ("madvise", "always", "never"; "unknown" elsewhere): under "always" a fresh
    mapping faults in 2 MB at a time, so page faults count far fewer for the same memory."""
    text = setting.read_text() if setting.is_file() else ""
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else "unknown"


@dataclasses.dataclass(frozen=True)
class Timing:
    """Milliseconds per call of one runner over the rounds that were kept."""

    median_ms: float
    min_ms: float
    kept: int
    rounds: int


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads (``None``: as they are), restoring the number after."""
    if count is not None and count < 1:
        raise ValueError(f"threads={count}: use 1 or more")
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot (Linux), or None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _foreign_cpu_seconds(start: tuple[float | None, float]) -> float:
    """CPU time other processes used since ``start`` (machine busy time minus this process's own)."""
    busy_then, own_then = start
    busy_now = _busy_cpu_seconds()
    if busy_then is None or busy_now is None:
        return 0.0
    return max(0.0, (busy_now - busy_then) - (time.process_time() - own_then))


def interleaved_timings(
    runners: Mapping[str, Callable[[Tensor], object]], inputs: Tensor, *, repeats: int = 20, warmup: int = 3,
    quiet_share: float = 0.1, window_s: float = 0.25, max_rounds: int | None = None,
) -> dict[str, Timing]:
    """Time every runner once per round, round-robin, so they share the same noise; each round starts
    one runner later than the one before, so every runner takes every place in the order equally often
    (measured: at 2 threads, of three ONNX Runtime runners in a fixed order, the last ran about 8 % faster
    than the one before it on the same file).

    Quiet-machine guard (Linux): rounds are grouped into windows of at least ``window_s``
    seconds (the kernel counts CPU time in clock ticks); a window during which other processes
    used more than ``quiet_share`` of one core is dropped. Rounds go on until ``repeats`` are
    kept or ``max_rounds`` (default ``5 * repeats``, checked between windows) have run; then the
    noisy rounds are used too, and ``kept`` < ``repeats`` says so.
    """
    max_rounds = max_rounds or 5 * repeats
    with torch.inference_mode():
        for _ in range(warmup):
            for run in runners.values():
                run(inputs)
        names = list(runners)
        quiet: dict[str, list[float]] = {name: [] for name in runners}
        every: dict[str, list[float]] = {name: [] for name in runners}
        rounds = kept = 0
        while rounds < max_rounds and kept < repeats:
            window: dict[str, list[float]] = {name: [] for name in runners}
            start, window_start = (_busy_cpu_seconds(), time.process_time()), time.perf_counter()
            first = next(iter(window.values()))
            while not first or time.perf_counter() - window_start < window_s:
                shift = rounds % len(names)
                rounds += 1
                for name in names[shift:] + names[:shift]:
                    call_start = time.perf_counter()
                    runners[name](inputs)
                    window[name].append((time.perf_counter() - call_start) * 1e3)
            wall = time.perf_counter() - window_start
            for name, times in window.items():
                every[name] += times
            if _foreign_cpu_seconds(start) <= quiet_share * wall:
                for name, times in window.items():
                    quiet[name] += times
                kept = len(next(iter(quiet.values())))
    samples = quiet if kept >= repeats else every
    return {name: Timing(statistics.median(times), min(times), kept, rounds) for name, times in samples.items()}


def interleaved_latency_ms(
    runners: Mapping[str, Callable[[Tensor], object]], inputs: Tensor, *, repeats: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median milliseconds per call of each runner (see :func:`interleaved_timings`)."""
    timings = interleaved_timings(runners, inputs, repeats=repeats, warmup=warmup)
    return {name: timing.median_ms for name, timing in timings.items()}


def state_dict_bytes(model: nn.Module) -> int:
    """Size of ``model``'s state_dict as ``torch.save`` writes it (a measurement, never loaded back)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
