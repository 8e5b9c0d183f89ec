"""The quickstart jobs: PTQ with float and int8 side by side, offline.

``run_cifar10_demo`` (``qzoo demo``) quantizes the CIFAR-10 MobileNetV2 shipped in ``weights/``
on the CIFAR-10 sample shipped in the package and reports real accuracies. ``run_demo``
(``qzoo demo --model NAME``) works for any model: seeded random weights with BatchNorm
statistics refreshed from synthetic images, so it measures how faithfully int8 follows float,
size and speed, not accuracy. Deep random networks are chaotic (tiny input changes move their
outputs a lot); resnet18's random initialisation is the most stable for judging fidelity.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import quantization
from .benchmark import interleaved_latency_ms, page_faults_per_call, state_dict_bytes
from .data import synthetic_images
from .ptq import quantize
from .registry import get_model
from .train import refresh_batchnorm
from .workflow import bench, load_model, ptq


def run_demo(
    model_name: str = "resnet18",
    *,
    backend: str = quantization.DEFAULT_BACKEND,
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

    int8_model = quantize(float_model, synthetic_images(calibration_images, image_size, seed=1).split(16),
                          backend=backend, progress=progress)

    held_out = synthetic_images(64, image_size, seed=2)
    with torch.inference_mode(), quantization.quantized_engine(backend):
        reference, quantized = float_model(held_out), int8_model(held_out)
        # each batch size on its own copy, first called at that size: torch's x86 engine keeps one fast path per
        # packed conv weight, for the shape and thread count of its first call (docs/benchmarks.md)
        latency = {batch: interleaved_latency_ms({"fp32": float_model, "int8": copy.deepcopy(int8_model)},
                                                 held_out[:batch], repeats=repeats)
                   for batch in (1, 16)}
        faults = {str(batch): page_faults_per_call(float_model, held_out[:batch]) for batch in latency}
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
        "fp32_page_faults_per_call": faults,
    }


SAMPLE_ARCHIVE = Path(__file__).with_name("sample_data") / "cifar10-sample.tar.gz"
DEMO_WEIGHTS = "mobilenet_v2.cifar10_float"


def demo_weights_folder() -> Path:
    """The repository's ``weights/mobilenet_v2.cifar10_float`` folder (qzoo installed from a clone)."""
    folder = Path(__file__).resolve().parents[1] / "weights" / DEMO_WEIGHTS
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is missing: the CIFAR-10 demo reads the float MobileNetV2 from a clone of qzoo's "
            "repository (pip install -e .); `qzoo demo --model resnet18` runs the synthetic demo anywhere")
    return folder


def run_cifar10_demo(*, backend: str = quantization.DEFAULT_BACKEND, progress: bool = True, repeats: int = 20) -> dict[str, Any]:
    """PTQ of the shipped CIFAR-10 MobileNetV2 on the shipped sample: calibrate on its 500 training
    images, evaluate float and int8 on its 2,000 test images, and time both side by side."""
    loaded = load_model(str(demo_weights_folder()), progress=progress)
    with tempfile.TemporaryDirectory() as out:
        report = ptq(loaded, str(SAMPLE_ARCHIVE), out, backend=backend, calib_images=500, progress=progress)
        int8 = load_model(out, progress=progress)
        timing = bench(int8, image_size=loaded.transforms.crop_size if loaded.transforms else 32, repeats=repeats)
    report.pop("out")
    report.update(model=DEMO_WEIGHTS, threads=torch.get_num_threads(), latency_ms=timing["latency_ms"],
                  speedup=timing["speedup"], fp32_page_faults_per_call=timing["fp32_page_faults_per_call"])
    return report
