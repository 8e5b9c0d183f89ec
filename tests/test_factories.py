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
from helpers import HEAVY, NUM_CLASSES, PicklePayload, arguments, assert_varies, images, input_size, refreshed, run
from torch import nn
from torchvision.models import MobileNet_V2_Weights, ResNet18_Weights, ResNet50_Weights

import qzoo
from qzoo import pretrained
from qzoo.pretrained import entry_name


def has_observers(model: nn.Module) -> bool:
    return any(isinstance(m, torch.ao.quantization.ObserverBase) for m in model.modules())


def float_layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


@pytest.mark.parametrize("name", HEAVY)
def test_each_mode_of_each_factory(name):
    """On each family's smallest member; every model's PTQ and QAT structure is checked on the meta device
    (test_models)."""
    before = torch.backends.quantized.engine
    kwargs = arguments(name)
    ptq = qzoo.get_model(name, prepare="ptq", backend="qnnpack", **kwargs)
    assert not ptq.training and qzoo.fused_mode(ptq) == "ptq" and has_observers(ptq)
    assert qzoo.model_backend(ptq) == "qnnpack"
    qat = qzoo.get_model(name, prepare="qat", **kwargs)
    assert qat.training and qzoo.fused_mode(qat) == "qat"
    assert any(hasattr(m, "weight_fake_quant") for m in qat.modules())
    int8 = qzoo.get_model(name, quantize=True, backend="qnnpack", **kwargs)  # random-init int8
    assert qzoo.is_int8(int8) and qzoo.model_backend(int8) == "qnnpack"
    assert not int8.training and float_layers(int8) == 0 and not has_observers(int8)
    assert torch.backends.quantized.engine == before
    with torch.inference_mode():
        assert int8(images(1, seed=0, size=input_size(name))).shape == (1, NUM_CLASSES)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prepare": "ptq", "quantize": True}, "cannot apply"),
        ({"prepare": "int8"}, "None \\(float\\), 'ptq' or 'qat'"),
        ({"backend": "tensorrt"}, "x86, fbgemm, qnnpack, onednn"),
        ({"backend": "qnnpack"}, "applies with prepare='ptq', prepare='qat' or quantize=True; a float model has no"),
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
        "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "googlenet", "inception_v3",
        "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
        *(f"regnet_{kind}_{size}" for kind in "xy" for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf",
                                                               "32gf")), "regnet_y_128gf",
        *(f"efficientnet_b{i}" for i in range(8)), *(f"efficientnet_lite{i}" for i in range(5)),
    ])
    assert set(qzoo.list_models()) >= {name.removeprefix("quantized_") for name in
                                       torchvision.models.list_models(module=torchvision.models.quantization)}
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
    path.parent.mkdir(parents=True, exist_ok=True)
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


AUX_HEADS = {"googlenet": ["aux1", "aux2"], "inception_v3": ["AuxLogits"]}


def torchvision_published_twin(name: str) -> nn.Module:
    """torchvision's quantizable twin as its factory builds it for published weights: ``transform_input``
    and auxiliary heads on, BatchNorm statistics from data (refilled with the heads set aside: Inception's
    needs 299-pixel inputs)."""
    torch.manual_seed(0)
    twin = getattr(torchvision.models.quantization, name)(transform_input=True, aux_logits=True, init_weights=True)
    heads = {head: getattr(twin, head) for head in AUX_HEADS[name]}
    for head in heads:
        setattr(twin, head, None)
    refreshed(twin, size=input_size(name))
    for head, module in heads.items():
        setattr(twin, head, module)
    return twin


def without_aux_heads(twin: nn.Module, name: str) -> nn.Module:
    """torchvision's last step for a user who did not ask for ``aux_logits``."""
    twin.aux_logits = False
    for head in AUX_HEADS[name]:
        setattr(twin, head, None)
    return twin


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_googlenet_and_inception_files_load_as_torchvisions_factories_load_them(name, torch_home, with_entries):
    """Their published float files hold auxiliary heads and expect ``transform_input=True``; so does
    GoogLeNet's int8 file (Inception's has no head). The factories apply ``transform_input`` and skip
    the heads' tensors unless ``aux_logits=True``, as torchvision does: outputs equal its twin's bit for bit."""
    spec = qzoo.registry.model_spec(name)
    twin = torchvision_published_twin(name)
    fill_cache(torch_home, with_entries, name, spec.float_weights.DEFAULT, torch_file(twin.state_dict()))
    model = qzoo.get_model(name, weights="DEFAULT", progress=False).eval()
    assert model.transform_input and not model.aux_logits
    assert all(getattr(model, head) is None for head in AUX_HEADS[name])
    x = images(4, seed=5, size=input_size(name))
    reference = without_aux_heads(copy.deepcopy(twin), name).eval()
    with torch.no_grad():
        expected = reference(x)
        assert_varies(expected)
        assert torch.equal(model(x), expected)
    with_heads = qzoo.get_model(name, weights="DEFAULT", aux_logits=True, progress=False)
    head = AUX_HEADS[name][0]
    assert torch.equal(getattr(with_heads, head).conv.conv.weight if name == "googlenet" else
                       getattr(with_heads, head).conv0.conv.weight,
                       twin.state_dict()[f"{head}.{'conv' if name == 'googlenet' else 'conv0'}.conv.weight"])

    twin.eval().fuse_model(is_qat=False)
    twin.qconfig = torch.ao.quantization.QConfig(activation=torch.ao.quantization.default_observer,
                                                 weight=torch.ao.quantization.default_per_channel_weight_observer)
    if name == "inception_v3":  # torchvision drops the head before loading its int8 file, which has none
        without_aux_heads(twin, name)
    torch.ao.quantization.prepare(twin, inplace=True)
    with torch.no_grad():
        twin(images(16, seed=1, size=input_size(name)))
    with qzoo.quantized_engine("fbgemm"):
        torch.ao.quantization.convert(twin, inplace=True)
    fill_cache(torch_home, with_entries, name, spec.int8_weights.DEFAULT, torch_file(twin.state_dict()))
    int8 = qzoo.get_model(name, quantize=True, progress=False)
    assert qzoo.is_int8(int8) and qzoo.model_backend(int8) == "fbgemm" and int8.transform_input
    reference = without_aux_heads(twin, name)
    expected = run(reference, x, "fbgemm")
    assert_varies(expected)
    assert torch.equal(run(int8, x, "fbgemm"), expected)
