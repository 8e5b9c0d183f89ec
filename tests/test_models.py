"""Float parity with torchvision, fusion numerics and QAT fusion, for every registered model."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import NUM_CLASSES, SIZE, assert_varies, images, refreshed
from torch import nn

import qzoo

ALL = qzoo.list_models()
RESNETS = [name for name in ALL if name != "mobilenet_v2"]


def torchvision_reference(name: str) -> nn.Module:
    """The model qzoo must match: torchvision's float ResNet, or its quantizable (ReLU) MobileNetV2."""
    if name == "mobilenet_v2":
        return torchvision.models.quantization.mobilenet_v2(num_classes=NUM_CLASSES)
    return torchvision.models.get_model(name, num_classes=NUM_CLASSES)


@pytest.mark.parametrize("name", ALL)
def test_torchvision_float_state_dict_loads_strictly_and_outputs_match(name):
    torch.manual_seed(0)
    reference = refreshed(torchvision_reference(name))
    model = qzoo.get_model(name, num_classes=NUM_CLASSES).eval()
    model.load_state_dict(torchvision.models.get_model(name, num_classes=NUM_CLASSES).state_dict(), strict=True)
    model.load_state_dict(reference.state_dict(), strict=True)
    x = images(4, seed=3)
    with torch.no_grad():
        expected, actual = reference(x), model(x)
    assert_varies(expected)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_factories_pass_width_mult_and_num_classes_through():
    model = qzoo.mobilenet_v2(width_mult=0.5, num_classes=7)
    assert model.classifier[-1].out_features == 7
    assert model.features[0][0].out_channels == 16
    assert model.last_channel == 1280
    assert qzoo.resnet18(num_classes=3).fc.out_features == 3


def test_mobilenet_has_relu_only_and_resnet_relus_are_not_inplace():
    mobilenet = qzoo.mobilenet_v2()
    assert not any(isinstance(m, nn.ReLU6) for m in mobilenet.modules())
    for model in (mobilenet, qzoo.resnet50()):
        relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        assert relus and not any(m.inplace for m in relus)
        assert len({id(m) for m in relus}) == len(relus)


def fusion_change(name: str, dtype: torch.dtype) -> float:
    torch.manual_seed(0)
    model = refreshed(qzoo.get_model(name, num_classes=NUM_CLASSES)).to(dtype)
    x = images(4, seed=3).to(dtype)
    with torch.no_grad():
        before = model(x)
        model.fuse_model()
        after = model(x)
    assert_varies(before)
    assert qzoo.fused_mode(model) == "ptq"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "a BatchNorm was left unfused"
    return ((after - before).norm() / before.norm()).item()


@pytest.mark.parametrize("name", ALL)
def test_eval_fusion_is_exact_in_float64(name):
    """Folding BatchNorm is an identity: in float64 nothing is left but rounding."""
    assert fusion_change(name, torch.float64) < 1e-9


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "mobilenet_v2"])
def test_eval_fusion_changes_float32_outputs_by_less_than_1e_4(name):
    # Past ~50 layers a random network amplifies float32 rounding itself (resnet152: 4.8e-4),
    # which is why the exactness check above runs in float64 for every model.
    assert fusion_change(name, torch.float32) < 1e-4


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_qat_fusion_trains(name):
    torch.manual_seed(0)
    model = qzoo.get_model(name, num_classes=NUM_CLASSES).train()
    model.fuse_model()
    assert qzoo.fused_mode(model) == "qat"
    weights = [p for p in model.parameters() if p.dim() == 4]
    before = [p.detach().clone() for p in weights]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(images(4, seed=3)), torch.arange(4))
    loss.backward()
    optimizer.step()
    assert all(p.grad is not None for p in weights)
    changed = sum(not torch.equal(a, p) for a, p in zip(before, weights))
    assert changed == len(weights)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_fuse_model_refuses_second_fusion_and_wrong_mode(name):
    model = qzoo.get_model(name)
    with pytest.raises(RuntimeError, match="call model.eval"):  # it would fold batch statistics
        model.fuse_model(is_qat=False)
    qat_in_eval = qzoo.get_model(name).eval()
    qat_in_eval.fuse_model(is_qat=True)  # torch's fuse_modules_qat accepts an eval-mode model: so does qzoo
    assert qzoo.fused_mode(qat_in_eval) == "qat" and qzoo.prepare_qat(qat_in_eval).training
    model.eval().fuse_model()
    with pytest.raises(RuntimeError, match="already fused"):
        model.fuse_model()
    block = next(m for m in model.modules() if hasattr(m, "fuse_model") and m is not model)
    with pytest.raises(RuntimeError, match="already fused"):
        block.fuse_model()


def test_models_build_in_train_mode_like_torchvisions_and_unfused():
    for name in ("resnet18", "mobilenet_v2"):
        model = qzoo.get_model(name)
        assert model.training and qzoo.fused_mode(model) is None and qzoo.model_backend(model) is None
        assert not qzoo.get_model(name, prepare="ptq").training and qzoo.get_model(name, prepare="qat").training


def test_input_size_is_not_fixed():
    model = refreshed(qzoo.resnet18(num_classes=NUM_CLASSES))
    with torch.no_grad():
        assert model(torch.randn(1, 3, SIZE + 16, SIZE - 16)).shape == (1, NUM_CLASSES)
