"""PTQ calibration time, torch's own eager flow vs qzoo's, on the same model, alternated.

torch's flow: ``fuse_model``, ``tq.prepare`` with torch's ``HistogramObserver`` (every fused
output observed twice), forward passes. qzoo's: ``prepare_ptq`` + ``calibrate`` (observed once,
qzoo's faster count). Both give the same int8 model bit for bit
(tests/test_quantization.py::test_ptq_gives_the_int8_model_of_torchs_own_flow_bit_for_bit).

    python tools/calibration_speed.py            # resnet18 and mobilenet_v2, 128 images of 224x224, 2 threads
"""

from __future__ import annotations

import copy
import time
import warnings

import torch
import torch.ao.quantization as tq
from torch import nn

import qzoo
from qzoo.data import synthetic_images


def torch_flow(model: nn.Module, batches: list[torch.Tensor]) -> None:
    model.fuse_model(is_qat=False)
    model.qconfig = qzoo.get_qconfig("x86")._replace(
        activation=tq.HistogramObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=127))
    tq.prepare(model, inplace=True)
    with torch.no_grad():
        for batch in batches:
            model(batch)


def qzoo_flow(model: nn.Module, batches: list[torch.Tensor]) -> None:
    qzoo.calibrate(qzoo.prepare_ptq(model, "x86"), batches, progress=False)


def main() -> None:
    warnings.simplefilter("ignore")  # torch's deprecation notices on every tq call
    torch.set_num_threads(2)
    batches = list(synthetic_images(128, 224, seed=3).split(32))
    for name in ("resnet18", "mobilenet_v2"):
        torch.manual_seed(0)
        base = qzoo.get_model(name).eval()
        seconds: dict[str, list[float]] = {"torch": [], "qzoo": []}
        for _ in range(2):
            for label, flow in (("torch", torch_flow), ("qzoo", qzoo_flow)):
                model = copy.deepcopy(base)
                start = time.perf_counter()
                flow(model, batches)
                seconds[label].append(time.perf_counter() - start)
        print(f"{name}: torch {min(seconds['torch']):.1f} s, qzoo {min(seconds['qzoo']):.1f} s "
              f"(best of 2 each), {min(seconds['torch']) / min(seconds['qzoo']):.2f}x", flush=True)


if __name__ == "__main__":
    main()
