"""The quickstart job: PTQ of a qzoo model on built-in synthetic images, float vs int8 side by side.

The model has seeded random weights (BatchNorm statistics refreshed from the images), so the
report measures how faithfully int8 follows float, its size and its speed, not accuracy.
Deep random networks are chaotic (tiny input changes move their outputs a lot), so the
default is resnet18, the one whose random initialisation is stable enough to judge fidelity.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from . import quantization
from .benchmark import interleaved_latency_ms, state_dict_bytes
from .data import synthetic_images
from .registry import get_model
from .train import refresh_batchnorm


def run_demo(
    model_name: str = "resnet18",
    *,
    backend: str = "x86",
    image_size: int = 64,
    calibration_images: int = 64,
    repeats: int = 20,
    progress: bool = True,
) -> dict[str, Any]:
    """Build, calibrate, convert and compare; return the measurements as a JSON-ready dict."""
    with torch.random.fork_rng():  # a reproducible model without touching the caller's RNG
        torch.manual_seed(0)
        float_model = get_model(model_name, num_classes=10)
    refresh_batchnorm(float_model, synthetic_images(64, image_size, seed=0).split(16))
    float_model.eval()

    int8_model = quantization.prepare_ptq(copy.deepcopy(float_model), backend)
    quantization.calibrate(int8_model, synthetic_images(calibration_images, image_size, seed=1).split(16),
                           progress=progress)
    quantization.convert(int8_model)

    held_out = synthetic_images(64, image_size, seed=2)
    with torch.inference_mode(), quantization.quantized_engine(backend):
        reference, quantized = float_model(held_out), int8_model(held_out)
        latency = {
            batch: interleaved_latency_ms({"fp32": float_model, "int8": int8_model}, held_out[:batch], repeats=repeats)
            for batch in (1, 16)
        }
    float_bytes, int8_bytes = state_dict_bytes(float_model), state_dict_bytes(int8_model)
    return {
        "model": model_name,
        "backend": backend,
        "image_size": image_size,
        "calibration_images": calibration_images,
        "threads": torch.get_num_threads(),
        "cosine_similarity": F.cosine_similarity(reference, quantized).mean().item(),
        "top1_agreement": (reference.argmax(1) == quantized.argmax(1)).float().mean().item(),
        "float_bytes": float_bytes,
        "int8_bytes": int8_bytes,
        "size_ratio": int8_bytes / float_bytes,
        "latency_ms": {str(batch): times for batch, times in latency.items()},
        "speedup": {str(batch): times["fp32"] / times["int8"] for batch, times in latency.items()},
    }
