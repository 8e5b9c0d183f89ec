"""qzoo in place of ``torchvision.models.quantization``: torchvision's own quantized-model test and the
flow of its reference training script (``references/classification/train_quantization.py``) run
unchanged on qzoo's factories, for every model both have."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.quantization as tq
import torchvision
from helpers import assert_varies, make_image_folder, refreshed
from torch import nn
from torchvision import datasets, transforms

import qzoo

SHARED = sorted(set(name.removeprefix("quantized_")
                    for name in torchvision.models.list_models(module=torchvision.models.quantization))
                & set(qzoo.list_models()))


# torchvision's test passes these arguments (its _model_params) and reads scripted outputs this way
# (its script_model_unwrapper): GoogLeNet and Inception v3 return named tuples when scripted
TORCHVISION_MODEL_PARAMS = {"inception_v3": {"input_shape": (1, 3, 299, 299), "init_weights": True},
                            "googlenet": {"init_weights": True}}
SCRIPTED_OUTPUTS = {"googlenet": lambda output: output.logits, "inception_v3": lambda output: output.logits}


def test_every_model_torchvision_quantizes_is_checked_here():
    assert set(SHARED) == {name.removeprefix("quantized_")
                           for name in torchvision.models.list_models(module=torchvision.models.quantization)}


@pytest.mark.parametrize("name", SHARED)
def test_torchvisions_quantized_classification_model_test(name, tmp_path):
    """The body of torchvision's ``test_quantized_classification_model`` (test/test_models.py), with its
    comparisons made exact; only torchvision's stored expected logits are left out (its random int8
    model is calibrated on one random tensor with its own qconfig, qzoo's on its own)."""
    model_fn = getattr(qzoo, name)
    torch.manual_seed(0)
    kwargs = {"num_classes": 5, "quantize": True, **TORCHVISION_MODEL_PARAMS.get(name, {})}
    input_shape = kwargs.pop("input_shape", (1, 3, 224, 224))
    model = model_fn(**kwargs)
    model.eval()
    x = torch.rand(input_shape)
    out = model(x)
    assert out.shape[-1] == 5 and torch.isfinite(out).all()
    scripted = torch.jit.script(model)
    unwrap = SCRIPTED_OUTPUTS.get(name, lambda output: output)
    assert torch.equal(unwrap(scripted(x)), out)
    torch.jit.save(scripted, tmp_path / "scripted.pt")
    assert torch.equal(unwrap(torch.jit.load(tmp_path / "scripted.pt")(x)), out)
    assert torch.equal(torch.fx.symbolic_trace(model)(x), out)

    kwargs["quantize"] = False
    for eval_mode in [True, False]:
        model = model_fn(**kwargs)
        if eval_mode:
            model.eval()
            model.qconfig = tq.default_qconfig
        else:
            model.train()
            model.qconfig = tq.default_qat_qconfig
        model.fuse_model(is_qat=not eval_mode)
        if eval_mode:
            tq.prepare(model, inplace=True)
        else:
            tq.prepare_qat(model, inplace=True)
            model.eval()
        tq.convert(model, inplace=True)
        assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


@pytest.mark.parametrize("name", SHARED)
def test_module_names_equal_torchvisions(name):
    ours = qzoo.get_model(name)
    theirs = getattr(torchvision.models.quantization, name)()
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert ours.training and theirs.training  # factories return train mode, as torchvision's do


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    """The reference script's ImageFolder loaders, on a tiny folder of 32x32 images made here."""
    root = make_image_folder(tmp_path_factory.mktemp("tiny"), per_class=(8, 4))
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.25,) * 3)])
    train = datasets.ImageFolder(str(root / "train"), transform)
    test = datasets.ImageFolder(str(root / "test"), transform)
    return (torch.utils.data.DataLoader(train, batch_size=6, shuffle=False),
            torch.utils.data.DataLoader(test, batch_size=6, shuffle=False))


def evaluate(model: nn.Module, loader) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(images) for images, _ in loader])


def reference_ptq(get_model, state, loaders, tmp_path) -> torch.Tensor:
    """``--post-training-quantize``: build, eval, fuse for PTQ, prepare, calibrate, convert, evaluate, script."""
    train_loader, test_loader = loaders
    model = get_model(weights=None, quantize=False)
    model.load_state_dict(state)  # as the script's --weights would: a trained-like state shared by both
    model.eval()
    model.fuse_model(is_qat=False)
    model.qconfig = tq.get_default_qconfig("x86")
    tq.prepare(model, inplace=True)
    evaluate(model, train_loader)  # calibration
    tq.convert(model, inplace=True)
    logits = evaluate(model, test_loader)
    torch.jit.save(torch.jit.script(model), tmp_path / "quantized.pt")
    assert torch.equal(evaluate(torch.jit.load(tmp_path / "quantized.pt"), test_loader), logits)
    return logits


def reference_qat(get_model, state, loaders) -> tuple[list[float], torch.Tensor]:
    """The QAT path, straight after building: fuse for QAT, prepare_qat, one epoch, then an eval copy converted."""
    train_loader, test_loader = loaders
    model = get_model(weights=None, quantize=False)
    model.load_state_dict(state)
    model.fuse_model(is_qat=True)
    model.qconfig = tq.get_default_qat_qconfig("x86")
    tq.prepare_qat(model, inplace=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0001, momentum=0.9, weight_decay=0.0001)
    criterion = nn.CrossEntropyLoss()
    losses = []
    torch.manual_seed(0)  # dropout draws the same masks in both runs
    model.train()
    for images, target in train_loader:
        loss = criterion(model(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.apply(tq.disable_observer)
    model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
    quantized_eval_model = copy.deepcopy(model)
    quantized_eval_model.eval()
    tq.convert(quantized_eval_model, inplace=True)
    return losses, evaluate(quantized_eval_model, test_loader)


# torch's quantized mean over a 1x1 map in channels-last layout fails for batches > 1 ("required rank 4
# tensor to use channels_last format"): ShuffleNetV2 on these 32-pixel images, torchvision's twin as well
MEAN_OF_1X1_MAP = pytest.mark.xfail(strict=True, raises=RuntimeError, reason="torch's quantized mean of a 1x1 map")


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_large",
                                  pytest.param("shufflenet_v2_x0_5", marks=MEAN_OF_1X1_MAP)])
def test_the_reference_scripts_flows_give_torchvisions_results_bit_for_bit(name, loaders, tmp_path):
    ours, theirs = getattr(qzoo, name), getattr(torchvision.models.quantization, name)
    torch.manual_seed(0)
    state = refreshed(qzoo.get_model(name)).state_dict()  # BatchNorm statistics from data: outputs that vary
    with qzoo.quantized_engine("x86"):  # the script sets the engine globally; restored here
        ptq = reference_ptq(ours, state, loaders, tmp_path)
        assert torch.equal(ptq, reference_ptq(theirs, state, loaders, tmp_path))
        qat_losses, qat = reference_qat(ours, state, loaders)
        their_losses, their_qat = reference_qat(theirs, state, loaders)
    assert qat_losses == their_losses and torch.equal(qat, their_qat)
    assert_varies(ptq)
    assert_varies(qat)


def test_the_reference_scripts_test_only_flow(loaders):
    """``--test-only`` without ``--weights``: ``quantize=True, weights=None`` gives a random-init int8 model."""
    torch.manual_seed(0)
    model = qzoo.mobilenet_v2(weights=None, quantize=True)
    assert qzoo.is_int8(model) and not model.training and qzoo.model_record(model).weights is None
    logits = evaluate(model, loaders[1])
    assert logits.shape == (12, 1000) and torch.isfinite(logits).all()


def test_quantize_true_rules():
    """No weights argument: the published int8 weights, unless architecture arguments rule them out."""
    with pytest.raises(ValueError, match="resnet34 has no pretrained int8 weights"):
        qzoo.resnet34(quantize=True)  # would download for resnet18: the pretrained rule, not a random model
    assert qzoo.model_record(qzoo.resnet34(quantize=True, num_classes=4)).weights is None
    with pytest.raises(ValueError, match="1000 classes but num_classes=5"):
        qzoo.resnet18(quantize=True, weights="DEFAULT", num_classes=5)
