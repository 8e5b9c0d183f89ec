"""The torch releases qzoo accepts, checked at import (pip enforces them too, but not with --no-deps)."""

from __future__ import annotations

import torch
from torch.torch_version import TorchVersion

MINIMUM_TORCH = (2, 10)
"""Earlier releases have known code-execution and memory-corruption flaws in ``weights_only`` loading."""
SUPPORTED_TORCH = ">=2.10,<2.16"
"""The range pyproject.toml pins and CI tests at both ends (tests/legs)."""
PT2E_MINIMUM_TORCH = (2, 11)
"""The PT2E flow's floor: on torch 2.10 torchao 0.16 and 0.18 annotate nothing (measured: not even a
Conv2d + ReLU), so the "quantized" model would silently stay float."""


def check_torch_version(version: str = torch.__version__) -> None:
    """Raise ImportError for a torch older than :data:`MINIMUM_TORCH`, naming the upgrade."""
    if TorchVersion(version) < MINIMUM_TORCH:
        wanted = ".".join(map(str, MINIMUM_TORCH))
        raise ImportError(
            f"qzoo needs torch>={wanted}, found torch {version}: earlier releases have known flaws in "
            f"torch.load(weights_only=True), which qzoo relies on; pip install 'torch{SUPPORTED_TORCH}'"
        )


def check_pt2e_torch(version: str = torch.__version__) -> None:
    """Raise RuntimeError where this torch is older than :data:`PT2E_MINIMUM_TORCH`, naming the upgrade."""
    if TorchVersion(version) < PT2E_MINIMUM_TORCH:
        wanted = ".".join(map(str, PT2E_MINIMUM_TORCH))
        raise RuntimeError(f"flow='pt2e' needs torch>={wanted}, found torch {version}: on older releases torchao's "
                           f"X86InductorQuantizer quantizes nothing; pip install 'torch>={wanted},{SUPPORTED_TORCH.split(',')[1]}' "
                           "or use the eager flow (the default)")
