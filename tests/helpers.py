"""Shared test helpers: realistic random models and output comparisons."""

from __future__ import annotations

import os
import platform

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import qzoo
from qzoo.benchmark import transparent_huge_pages

NUM_CLASSES = 10
SIZE = 64

ALL = qzoo.list_models()
NOT_IN_TORCHVISION = [name for name in ALL if name.startswith("efficientnet_lite")]
"""Models whose float reference is another library (EfficientNet-Lite: tests/test_efficientnet_lite.py)."""
HEAVY = ["efficientnet_b0", "efficientnet_lite0", "googlenet", "inception_v3", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small",
         "regnet_x_400mf", "regnet_y_400mf", "resnet18", "resnet50", "shufflenet_v2_x0_5"]
"""Models the heavy per-model checks run on (int8 fidelity, every mode, file round trips, fusion in
float64): each family's smallest member, plus the block kinds it lacks (ResNet's Bottleneck,
RegNetX's plain bottleneck). The light checks run on all of ``ALL``."""
GIANTS = ["regnet_x_32gf", "regnet_y_128gf", "regnet_y_32gf", "wide_resnet101_2"]
"""Models over 100 M parameters: checked on the meta device (structure, fusion coverage), not run."""
BLOCK_KINDS = {"resnet50": "resnet", "regnet_x_400mf": "regnet"}
"""The members of ``HEAVY`` that are not their family's smallest (test_models checks both lists)."""


def input_size(name: str) -> int:
    """The test image side for ``name``: ``SIZE``, or the architecture's minimum when larger (Inception v3: 75)."""
    return max(SIZE, qzoo.registry.model_spec(name).min_size)


def arguments(name: str) -> dict:
    """Architecture arguments the tests build ``name`` with: 10 classes; no auxiliary head for
    Inception v3, whose head needs 299-pixel inputs in train mode (BatchNorm refills run in train mode)."""
    return {"num_classes": NUM_CLASSES, **({"aux_logits": False} if name == "inception_v3" else {})}


def images(count: int, seed: int, size: int = SIZE) -> Tensor:
    return qzoo.synthetic_images(count, size, seed=seed)


def refreshed(model: nn.Module, seed: int = 0, size: int = SIZE) -> nn.Module:
    """``model`` in eval mode with BatchNorm statistics refilled from data (not mean 0 / var 1)."""
    qzoo.refresh_batchnorm(model, images(16, seed, size).split(8))
    return model.eval()


def fresh_model(name: str, seed: int = 0) -> nn.Module:
    """``name`` built with :func:`arguments` from a fixed seed, BatchNorm statistics refilled, eval mode."""
    torch.manual_seed(seed)
    return refreshed(qzoo.get_model(name, **arguments(name)), size=input_size(name))


def assert_varies(outputs: Tensor) -> None:
    """A check on outputs proves nothing if they do not depend on the input."""
    spread = outputs.std(0).mean() / outputs.abs().mean()
    assert spread > 0.05, f"outputs barely depend on the input (relative spread {spread:.4f})"


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """``||actual - expected|| / ||expected||`` over the whole batch."""
    return ((actual - expected).norm() / expected.norm()).item()


def cosine(a: Tensor, b: Tensor) -> float:
    return F.cosine_similarity(a.flatten(1), b.flatten(1)).mean().item()


def quantized_copy(model: nn.Module, backend: str = "x86", calibration: Tensor | None = None, **kw) -> nn.Module:
    batches = (images(16, 1) if calibration is None else calibration).split(8)
    return qzoo.quantize(model, batches, backend=backend, progress=False, **kw)


def run(model: nn.Module, x: Tensor, backend: str = "x86") -> Tensor:
    with torch.inference_mode(), qzoo.quantized_engine(backend):
        return model(x)


def make_image_folder(root, classes=("cat", "dog", "ship"), per_class=(12, 6), size: int = 32, mode: str = "RGB"):
    """A train/ and test/ ImageFolder of coloured noise images, each class its own dominant channel."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.zeros((size, size, 3))
                pixels[..., index % 3] = 200
                pixels = np.clip(pixels + generator.normal(0, 40, pixels.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).convert(mode).save(folder / f"{i}.png")
    return root


def write_png16(path, pixels) -> None:
    """Write ``pixels`` (uint16, (H, W, 3) colour or (H, W) grey) as a 16-bit PNG, chunk by chunk."""
    import struct
    import zlib

    height, width = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2 if pixels.ndim == 3 else 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


class PicklePayload:
    """Unpickling this runs ``touch $QZOO_SENTINEL``: a stand-in for a malicious checkpoint."""

    def __reduce__(self):
        return (os.system, (f"touch {os.environ['QZOO_SENTINEL']}",))


GLIBC_PAGE_BY_PAGE = platform.libc_ver()[0] == "glibc" and transparent_huge_pages() != "always"
GLIBC_PAGE_BY_PAGE_REASON = "needs glibc's malloc on a kernel that faults fresh memory in 4 KB pages (no huge pages)"
"""Where the page-fault counts of glibc's large-block mappings are checked: on musl, macOS or Windows there are none to
count, and with transparent huge pages "always" a 32 MB block faults in 16 times, not 8,192."""
