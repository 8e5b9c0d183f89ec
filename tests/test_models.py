"""Float parity with torchvision, fusion numerics and QAT fusion, for every registered model."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import (ALL, BLOCK_KINDS, GIANTS, HEAVY, NOT_IN_TORCHVISION, NUM_CLASSES, SIZE, arguments, assert_varies, images,
                     input_size, refreshed)
from torch import nn

import qzoo

# EfficientNet's SiLU runs as x * sigmoid(x), which differs from torch's fused SiLU kernel by rounding,
# and its deep random nets amplify float32 rounding chaotically (b6: 0.28 relative): compared in float64
FLOAT64_FAMILIES = ("efficientnet",)


def torchvision_reference(name: str) -> nn.Module:
    """The model qzoo must match: torchvision's float model, or its quantizable (ReLU) MobileNetV2."""
    if name == "mobilenet_v2":
        return torchvision.models.quantization.mobilenet_v2(num_classes=NUM_CLASSES)
    extra = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}  # without its FutureWarning
    return torchvision.models.get_model(name, **arguments(name), **extra)


@pytest.mark.parametrize("name", [name for name in ALL if name not in GIANTS + NOT_IN_TORCHVISION])
def test_torchvision_float_state_dict_loads_strictly_and_outputs_match(name):
    torch.manual_seed(0)
    size = input_size(name)
    reference = refreshed(torchvision_reference(name), size=size)
    model = qzoo.get_model(name, **arguments(name)).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = images(4, seed=3, size=size)
    in_float64 = qzoo.registry.model_spec(name).family.endswith(FLOAT64_FAMILIES)
    if in_float64:
        reference, model, x = reference.double(), model.double(), x.double()
    with torch.no_grad():
        expected, actual = reference(x), model(x)
    assert_varies(expected)
    # float64 logits of the deepest nets reach 10^4: 1e-5 alone would ask for 1e-9 relative (b6 misses it
    # by 1.2e-5 on one thread)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-8 if in_float64 else 0)


def meta_model(build, name: str, monkeypatch) -> nn.Module:
    """``build(name, ...)`` on the meta device: structure without memory (torchvision's RegNet computes
    its widths with tensors, which the meta device cannot read back: those run on the CPU)."""
    widths = torchvision.models.regnet.BlockParams.from_init_params.__func__

    def widths_on_cpu(cls, *args, **kwargs):
        with torch.device("cpu"):
            return widths(cls, *args, **kwargs)

    monkeypatch.setattr(torchvision.models.regnet.BlockParams, "from_init_params", classmethod(widths_on_cpu))
    with torch.device("meta"):
        return build(name)


@pytest.mark.parametrize("name", ALL)
def test_every_model_has_torchvisions_state_layout_and_fuses_every_batchnorm(name, monkeypatch):
    """The light check of every model, giants included, on the meta device: the same state_dict keys and
    shapes as torchvision's float model; PTQ preparation folds every BatchNorm and gives every layer a
    qconfig; QAT preparation fake-quantizes every conv and linear weight."""
    ours = meta_model(lambda n: qzoo.get_model(n, **arguments(n)), name, monkeypatch)
    if name not in NOT_IN_TORCHVISION:  # EfficientNet-Lite's layout: mapped key by key in test_efficientnet_lite
        theirs = meta_model(torchvision_reference, name, monkeypatch)
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in ours.modules())
    ptq = meta_model(lambda n: qzoo.get_model(n, prepare="ptq", **arguments(n)), name, monkeypatch)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ptq.modules())
    prepared = [m for m in ptq.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(prepared) == layers and all(m.qconfig is not None for m in prepared)  # convert quantizes each
    qat = meta_model(lambda n: qzoo.get_model(n, prepare="qat", **arguments(n)), name, monkeypatch)
    assert sum(hasattr(m, "weight_fake_quant") for m in qat.modules()) == layers


def test_the_test_tiers_follow_the_registry():
    """HEAVY holds each family's smallest member (by parameters) and BLOCK_KINDS; GIANTS every model
    over 100 M parameters."""
    counts, families = {}, {}
    for spec in qzoo.registry.model_specs():
        with torch.device("meta"):
            counts[spec.name] = sum(p.numel() for p in spec.factory(**arguments(spec.name)).parameters())
        families.setdefault(spec.family.rsplit(".", 1)[-1], []).append(spec.name)
    smallest = {min(members, key=counts.__getitem__): family for family, members in families.items()}
    assert sorted(HEAVY) == sorted(set(smallest) | set(BLOCK_KINDS))
    assert all(name in families[family] for name, family in BLOCK_KINDS.items())
    assert sorted(GIANTS) == sorted(name for name, count in counts.items() if count > 100_000_000)


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
    size = input_size(name)
    model = refreshed(qzoo.get_model(name, **arguments(name)), size=size).to(dtype)
    x = images(4, seed=3, size=size).to(dtype)
    with torch.no_grad():
        before = model(x)
        model.fuse_model()
        after = model(x)
    assert_varies(before)
    assert qzoo.fused_mode(model) == "ptq"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "a BatchNorm was left unfused"
    return ((after - before).norm() / before.norm()).item()


@pytest.mark.parametrize("name", HEAVY)
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


def test_a_version_1_mnasnet_checkpoint_loads_as_torchvision_reads_it():
    """torchvision's first MNASNet layout had a fixed 32-channel stem at every width (its loader patches the
    model on reading a version-1 state): qzoo's model patches the same way and stays quantizable."""
    torch.manual_seed(0)
    donor = torchvision.models.mnasnet0_5(num_classes=NUM_CLASSES)
    state = donor.state_dict()
    state._metadata[""]["version"] = 1
    stem = [key for key in state if int(key.split(".")[1]) <= 8 and key.startswith("layers.")]
    without_stem = type(state)((k, v) for k, v in state.items() if k not in stem)
    without_stem._metadata = state._metadata
    donor.load_state_dict(without_stem, strict=False)
    donor = refreshed(donor)  # now a version-1 model (32-channel stem), with statistics from data
    version_1 = donor.state_dict()
    assert version_1._metadata[""]["version"] == 1 and version_1["layers.0.weight"].shape[0] == 32
    model = qzoo.mnasnet0_5(num_classes=NUM_CLASSES)
    model.load_state_dict(version_1)
    x = images(4, seed=3)
    with torch.no_grad():
        expected = donor(x)
        assert_varies(expected)
        torch.testing.assert_close(model.eval()(x), expected, atol=1e-5, rtol=0)
    assert all(isinstance(block, qzoo.QuantizableMNASNetInvertedResidual) for block in model.layers[8])
    assert not any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())
    int8 = qzoo.quantize(model, [images(8, seed=1)], progress=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in int8.modules()) and qzoo.is_int8(int8)


def test_int8_mnasnet_runs_on_32_pixel_batches_as_image_by_image():
    """torch's int8 mean over a 1x1 map in channels-last strides fails for batches > 1 (ShuffleNetV2 and
    torchvision's twin keep that limit, test_dropin); MNASNet, with no twin to match, averages a copy in the
    standard layout: a 32x32 batch runs and gives each image's own result bit for bit."""
    torch.manual_seed(0)
    model = refreshed(qzoo.mnasnet0_5(num_classes=NUM_CLASSES), size=32)
    int8 = qzoo.quantize(model, [images(8, seed=1, size=32)], progress=False)
    x = images(4, seed=3, size=32)
    with torch.inference_mode():
        together = int8(x)
        assert torch.equal(together, torch.cat([int8(image[None]) for image in x]))
    assert_varies(together)


@pytest.mark.parametrize("name", ["mnasnet0_5", "regnet_y_400mf"])
def test_rewrapped_blocks_keep_torchvisions_random_initialisation(name):
    """MNASNet's blocks and RegNetY's squeeze-excitation are rewrapped after torchvision builds them, keeping
    their layers and drawing no random numbers: the same seed gives torchvision's weights exactly."""
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(name, num_classes=NUM_CLASSES).state_dict()
    torch.manual_seed(0)
    ours = qzoo.get_model(name, num_classes=NUM_CLASSES).state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_resnet_cifar_stem_keeps_32x32_maps_fuses_exactly_and_quantizes():
    """stem='cifar': a 3x3 stride-1 conv and no max pool (the first stage sees 32x32), exact fusion
    in float64, and the argument recorded so saved models rebuild it; an unknown stem refused."""
    torch.manual_seed(0)
    model = qzoo.resnet18(num_classes=NUM_CLASSES, stem="cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and isinstance(model.maxpool, nn.Identity)
    assert model.layer1(model.relu(model.bn1(model.conv1(images(1, seed=0, size=32))))).shape[-2:] == (32, 32)
    model = refreshed(model, size=32).double()
    x = images(4, seed=3, size=32).double()
    with torch.no_grad():
        before = model(x)
        model.fuse_model()
        after = model(x)
    assert_varies(before)
    assert ((after - before).norm() / before.norm()).item() < 1e-9
    prepared = qzoo.resnet18(num_classes=NUM_CLASSES, stem="cifar", prepare="ptq")
    assert qzoo.model_record(prepared).kwargs["stem"] == "cifar"
    with pytest.raises(ValueError, match="stem='tiny'.*'imagenet'.*'cifar'"):
        qzoo.resnet18(stem="tiny")


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_input_transform_is_torchvisions_bit_for_bit_as_one_broadcast_multiply_add(name):
    """qzoo computes ``transform_input`` as ``x * scale + shift`` over the channels (two passes, two ONNX ops)
    where torchvision picks, scales and concatenates each channel: the same float32 values, bit for bit,
    for images far outside the usual range too; the constants are not in the state_dict."""
    reference = torchvision_reference(name).eval()
    reference.transform_input = True
    model = qzoo.get_model(name, **arguments(name), transform_input=True).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(2, 3, 16, 16, generator=generator) * scale for scale in (1e-3, 1.0, 1e3)])
    assert torch.equal(model._transform_input(x), reference._transform_input(x))
    assert set(model.state_dict()) == set(reference.state_dict())
    model.transform_input = False
    assert model._transform_input(x) is x
