"""int8 parity with torchvision.models.quantization: same weights, qconfig and batches -> same bits."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
import torchvision
from helpers import arguments, assert_varies, images, input_size, quantized_copy, refreshed, run

import qzoo


def float_pair(name: str):
    torch.manual_seed(0)
    extra = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}  # without its FutureWarning
    reference = getattr(torchvision.models.quantization, name)(**arguments(name), **extra)
    reference = refreshed(reference, size=input_size(name))
    model = qzoo.get_model(name, **arguments(name))
    model.load_state_dict(reference.state_dict())
    return reference, model.eval()


# every family torchvision quantizes, at its smallest member (and ResNet's Bottleneck)
TWINS = ["googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_large", "resnet18", "resnet50",
         "shufflenet_v2_x0_5"]


@pytest.mark.parametrize("name", TWINS)
@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
def test_int8_outputs_bit_identical_to_torchvision(name, backend):
    reference, model = float_pair(name)
    qconfig = qzoo.get_qconfig(backend)
    size = input_size(name)
    tv_int8 = quantized_copy(reference, backend, calibration=images(16, 1, size), qconfig=qconfig)
    qzoo_int8 = quantized_copy(model, backend, calibration=images(16, 1, size), qconfig=qconfig)
    x = images(8, seed=5, size=size)
    expected = run(tv_int8, x, backend)
    assert_varies(expected)
    assert torch.equal(run(qzoo_int8, x, backend), expected)
    assert tv_int8.state_dict().keys() == qzoo_int8.state_dict().keys()


@pytest.mark.parametrize("name", [name for name in TWINS if name != "mobilenet_v3_large"])  # a QAT file:
@pytest.mark.parametrize("backend", ["fbgemm", "qnnpack"])                                   # test_factories
def test_torchvision_int8_checkpoint_loads_into_quantize_true_model(name, backend):
    """torchvision publishes int8 files made with its own qconfig (qnnpack: per-tensor weights)."""
    reference, _ = float_pair(name)
    reference.fuse_model(is_qat=False)
    reference.qconfig = tq.get_default_qconfig(backend) if backend == "qnnpack" else tq.QConfig(
        activation=tq.default_observer, weight=tq.default_per_channel_weight_observer
    )
    tq.prepare(reference, inplace=True)
    size = input_size(name)
    with torch.no_grad():
        reference(images(16, seed=1, size=size))
    with qzoo.quantized_engine(backend):
        tq.convert(reference, inplace=True)
    model = qzoo.int8_skeleton(qzoo.get_model(name, **arguments(name)), backend)
    model.load_state_dict(reference.state_dict(), strict=True)
    x = images(8, seed=5, size=size)
    expected = run(reference, x, backend)
    assert_varies(expected)
    assert torch.equal(run(model, x, backend), expected)
