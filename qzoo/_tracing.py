"""The warnings torch raises on every TorchScript trace, hidden around qzoo's own calls."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def tracing_warnings_silenced() -> Iterator[None]:
    """Hide the warnings torch raises on every trace of an int8 model.

    torch marks TorchScript deprecated on every call (2.15: ``torch.jit.trace``, ``freeze``, ``save``), and
    the tracer warns that quantization parameters become constants, which freezing wants. The
    checks against the eager model after each trace are the guard these warnings stand for.
    """
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning):  # which one depends on the torch release
            warnings.filterwarnings("ignore", category=category, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield
