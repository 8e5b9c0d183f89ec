"""Factory modes, argument checking, and torchvision float weights through torch.hub's real cache path."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import NUM_CLASSES, PicklePayload, assert_varies, refreshed
from torch import nn
from torchvision.models import MobileNet_V2_Weights, ResNet18_Weights, ResNet50_Weights

import qzoo
from qzoo import pretrained
from qzoo.pretrained import entry_name


def has_observers(model: nn.Module) -> bool:
    return any(isinstance(m, torch.ao.quantization.ObserverBase) for m in model.modules())


def float_layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


@pytest.mark.parametrize("name", qzoo.list_models())
def test_each_mode_of_each_factory(name):
    before = torch.backends.quantized.engine
    ptq = qzoo.get_model(name, prepare="ptq", backend="qnnpack", num_classes=NUM_CLASSES)
    assert not ptq.training and qzoo.fused_mode(ptq) == "ptq" and has_observers(ptq)
    assert qzoo.model_backend(ptq) == "qnnpack"
    qat = qzoo.get_model(name, prepare="qat", num_classes=NUM_CLASSES)
    assert qat.training and qzoo.fused_mode(qat) == "qat"
    assert any(hasattr(m, "weight_fake_quant") for m in qat.modules())
    int8 = qzoo.get_model(name, quantize=True, backend="qnnpack", num_classes=NUM_CLASSES)  # random-init int8
    assert qzoo.is_int8(int8) and qzoo.model_backend(int8) == "qnnpack"
    assert not int8.training and float_layers(int8) == 0 and not has_observers(int8)
    assert torch.backends.quantized.engine == before
    with torch.inference_mode():
        assert int8(torch.randn(1, 3, 32, 32)).shape == (1, NUM_CLASSES)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prepare": "ptq", "quantize": True}, "cannot apply"),
        ({"prepare": "int8"}, "None \\(float\\), 'ptq' or 'qat'"),
        ({"backend": "tensorrt"}, "x86, fbgemm, qnnpack, onednn"),
        ({"weights": "IMAGENET1K_V9"}, "IMAGENET1K_V1"),
        ({"weights": "ResNet50_Weights.IMAGENET1K_V1"}, "choose one of ResNet18_Weights"),
        ({"weights": ResNet50_Weights.IMAGENET1K_V2}, "ResNet18_Weights"),
        ({"weights": ResNet18_Weights.DEFAULT, "quantize": True}, "prepare='ptq'"),
        ({"weights": "DEFAULT", "num_classes": 10}, "1000 classes but num_classes=10"),
        ({"groups": 2}, None),
    ],
)
def test_impossible_combinations_name_the_fix(kwargs, message):
    if message is None:  # resnet18 has no groups fixed, so torchvision itself refuses this
        with pytest.raises(ValueError, match="BasicBlock only supports groups=1"):
            qzoo.resnet18(**kwargs)
        return
    with pytest.raises(ValueError, match=message):
        qzoo.resnet18(**kwargs)


def test_architecture_arguments_cannot_be_overridden():
    with pytest.raises(ValueError, match="fixes groups=32"):
        qzoo.resnext50_32x4d(groups=8)
    assert qzoo.resnext50_32x4d(groups=32).layer1[0].conv2.groups == 32
    with pytest.raises(ValueError, match="drop block="):
        qzoo.QuantizableMobileNetV2(block=torchvision.models.mobilenetv2.InvertedResidual)
    with pytest.raises(ValueError, match="drop block="):
        qzoo.mobilenet_v3_small(block=torchvision.models.mobilenetv3.InvertedResidual)
    with pytest.raises(ValueError, match="drop inverted_residual="):
        qzoo.shufflenet_v2_x0_5(inverted_residual=torchvision.models.shufflenetv2.InvertedResidual)


def test_get_model_and_list_models():
    assert qzoo.list_models() == sorted([
        "mobilenet_v2", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
        "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
        "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
        "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    ])
    assert isinstance(qzoo.get_model("resnet34"), qzoo.QuantizableResNet)
    with pytest.raises(ValueError, match="did you mean resnet18"):
        qzoo.get_model("resnet19")
    with pytest.raises(TypeError):
        qzoo.resnet18("DEFAULT")  # keyword-only


def fill_cache(torch_home: Path, with_entries, name: str, weights, payload: bytes) -> Path:
    """Put ``payload`` where torch.hub caches ``weights``'s URL, and pin the entry to its sha256 (the real
    entry pins torchvision's published prefix, which a file made here cannot match)."""
    entry = pretrained.get_weights(entry_name(name, weights))
    with_entries(dataclasses.replace(entry, sha256=hashlib.sha256(payload).hexdigest()))
    path = torch_home / entry.filename
    path.parent.mkdir(parents=True)
    path.write_bytes(payload)
    return path


def torch_file(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "weights"), [("resnet18", ResNet18_Weights.IMAGENET1K_V1),
                                               ("mobilenet_v2", MobileNet_V2_Weights.IMAGENET1K_V2)])
def test_weights_load_torchvision_float_checkpoint_from_torch_hubs_cache(torch_home, with_entries, name, weights):
    torch.manual_seed(0)
    state = torchvision.models.get_model(name).state_dict()
    fill_cache(torch_home, with_entries, name, weights, torch_file(state))
    assert type(weights).DEFAULT is weights
    for spelling in ("DEFAULT", weights.name, f"{type(weights).__name__}.{weights.name}", weights,
                     entry_name(name, weights)):
        model = qzoo.get_model(name, weights=spelling, progress=False)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
        assert qzoo.model_record(model).weights == entry_name(name, weights)
    prepared = qzoo.get_model(name, weights=weights, prepare="ptq", progress=False)
    assert qzoo.fused_mode(prepared) == "ptq"


def test_a_cached_float_file_is_rehashed_on_every_load(torch_home):
    """The real entry, torchvision's published prefix: a file that does not match is never read."""
    torch_home.mkdir(parents=True)
    (torch_home / "resnet18-f37072fd.pth").write_bytes(torch_file({}))
    with pytest.raises(qzoo.IntegrityError, match=r"expected f37072fd\.\.\.; delete .*resnet18-f37072fd.pth"):
        qzoo.resnet18(weights="DEFAULT", progress=False)


def test_a_malicious_cached_checkpoint_is_never_unpickled(tmp_path, torch_home, with_entries, monkeypatch):
    """Even with a matching hash (a hostile mirror), loading is ``weights_only``: the payload never runs."""
    sentinel = tmp_path / "pwned"
    monkeypatch.setenv("QZOO_SENTINEL", str(sentinel))
    fill_cache(torch_home, with_entries, "resnet18", ResNet18_Weights.IMAGENET1K_V1,
               pickle.dumps({"conv1.weight": PicklePayload()}))
    with pytest.raises(pickle.UnpicklingError):
        qzoo.resnet18(weights="DEFAULT", progress=False)
    assert not sentinel.exists()


def torchvision_qat_checkpoint(seed: int = 0) -> tuple[dict, nn.Module]:
    """A MobileNetV3-Large state in the format of torchvision's published int8 file (a QAT state,
    qnnpack's default QAT qconfig, after a few training steps), and torchvision's int8 model from it."""
    torch.manual_seed(seed)
    model = torchvision.models.quantization.mobilenet_v3_large(num_classes=1000)
    nn.init.kaiming_normal_(model.classifier[-1].weight)  # logits that differ (the std-0.01 init quantizes to 0)
    model = refreshed(model).train()
    model.fuse_model(is_qat=True)
    model.qconfig = torch.ao.quantization.get_default_qat_qconfig("qnnpack")
    torch.ao.quantization.prepare_qat(model, inplace=True)
    with torch.no_grad():
        for step in range(3):
            model(torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(step)))
    state = model.state_dict()
    reference = copy.deepcopy(model).eval()
    with qzoo.quantized_engine("qnnpack"):
        torch.ao.quantization.convert(reference, inplace=True)
    return state, reference


@pytest.mark.parametrize("version", [2, 1], ids=["current", "before-gate-fake-quant"])
def test_torchvisions_qat_format_int8_checkpoint_loads_into_quantize_true(torch_home, with_entries, version):
    """MobileNetV3-Large's published int8 file is a QAT checkpoint: quantize=True prepares, loads and
    converts it as torchvision does, bit for bit; an older (version-1) state without the gate's
    fixed-range fake-quant loads too, with torchvision's placeholders."""
    state, reference = torchvision_qat_checkpoint()
    if version == 1:
        metadata = copy.deepcopy(state._metadata)
        for prefix in metadata:
            if f"{prefix}.fc1.weight" in state:  # a squeeze-excitation module
                metadata[prefix]["version"] = 1
        state = type(state)({k: v for k, v in state.items() if "scale_activation.activation_post_process" not in k})
        state._metadata = metadata
        twin = torchvision.models.quantization.mobilenet_v3_large()
        twin.fuse_model(is_qat=True)
        twin.qconfig = torch.ao.quantization.get_default_qat_qconfig("qnnpack")
        torch.ao.quantization.prepare_qat(twin, inplace=True)
        twin.load_state_dict(state)
        reference = twin.eval()
        with qzoo.quantized_engine("qnnpack"):
            torch.ao.quantization.convert(reference, inplace=True)
    weights = torchvision.models.quantization.MobileNet_V3_Large_QuantizedWeights.IMAGENET1K_QNNPACK_V1
    fill_cache(torch_home, with_entries, "mobilenet_v3_large", weights, torch_file(state))
    model = qzoo.mobilenet_v3_large(quantize=True, progress=False)
    assert qzoo.is_int8(model) and qzoo.model_backend(model) == "qnnpack" and not model.training
    x = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode(), qzoo.quantized_engine("qnnpack"):
        expected = reference(x)
    assert_varies(expected)
    with torch.inference_mode():
        assert torch.equal(model(x), expected)
