"""The quantization layer: presets, the PTQ/QAT workflow, its guards, engine handling, TorchScript."""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import (HEAVY, NUM_CLASSES, arguments, assert_varies, cosine, fresh_model, images, input_size,
                     quantized_copy, refreshed, run)
from torch import nn

import qzoo
from qzoo._record import update_record


def fresh(name: str = "resnet18") -> nn.Module:
    return fresh_model(name)


def int8_weights(model: nn.Module) -> list[torch.Tensor]:
    """Weights of every quantized conv (they unpack with ``.weight()``)."""
    return [m.weight() for m in model.modules() if hasattr(m, "_weight_bias") and hasattr(m, "groups")]


def trained_like(name: str, branch_scale: float) -> nn.Module:
    """A random network with the small residual branches trained ones have: each branch's last BatchNorm
    weight set to ``branch_scale``, statistics refilled from data. Raw random inits are chaotic (1% input
    noise takes resnet152 to cosine 0.77), so a fidelity bound on them can hardly tell 8 bits from 4.
    Plain chains without residuals (GoogLeNet, Inception v3) get every BatchNorm shift set to 1, so most
    ReLUs pass, as in trained networks: with zero shifts 1% input noise alone gives cosine 0.93 and 0.71
    (measured 2026-11-29), with shift 1 0.9985."""
    torch.manual_seed(0)
    model = qzoo.get_model(name, **arguments(name))
    if isinstance(model, (qzoo.QuantizableGoogLeNet, qzoo.QuantizableInception3)):
        for norm in model.modules():
            if isinstance(norm, nn.BatchNorm2d):
                nn.init.constant_(norm.bias, 1.0)
    for block in model.modules():
        if isinstance(block, qzoo.QuantizableBottleneck):
            nn.init.constant_(block.bn3.weight, branch_scale)
        elif isinstance(block, qzoo.QuantizableBasicBlock):
            nn.init.constant_(block.bn2.weight, branch_scale)
        elif isinstance(block, qzoo.QuantizableInvertedResidual) and block.use_res_connect:
            nn.init.constant_(block.conv[-1].weight, branch_scale)
        elif isinstance(block, qzoo.QuantizableMobileNetV3InvertedResidual) and block.use_res_connect:
            nn.init.constant_(block.block[-1][1].weight, branch_scale)
        elif isinstance(block, qzoo.QuantizableShuffleNetV2InvertedResidual) and block.stride == 1:
            nn.init.constant_(block.branch2[-2].weight, branch_scale)
        elif isinstance(block, qzoo.QuantizableMNASNetInvertedResidual) and block.apply_residual:
            nn.init.constant_(block.layers[-1].weight, branch_scale)
        elif isinstance(block, qzoo.QuantizableResBottleneckBlock):
            nn.init.constant_(block.f.c[1].weight, branch_scale)
        elif isinstance(block, qzoo.QuantizableLiteBlock) and block.use_res_connect:
            nn.init.constant_(block.project.bn.weight, branch_scale)
        elif isinstance(block, qzoo.QuantizableMBConv) and block.use_res_connect:
            nn.init.constant_(block.block[-1][1].weight, branch_scale)
        elif isinstance(block, qzoo.QuantizableSqueezeExcitation):  # random gates saturate at 0 or 1;
            with torch.no_grad():                                     # trained ones mostly do not
                block.fc2.weight.mul_(0.1)
    return refreshed(model, size=input_size(name))


# x86's 7-bit activations measured (2026-11-29, these networks): MobileNetV3 0.88 (large) / 0.96 (small),
# ShuffleNetV2 0.935 (x0.5) / 0.933 (x1.5), EfficientNet-B0 0.898; qnnpack's 8 bits: 0.97 / 0.98,
# 0.980 / 0.978 and 0.968. Those families are checked on qnnpack, where torchvision publishes
# MobileNetV3 (docs/models.md).
FIDELITY_BACKEND = {name: "qnnpack" for name in qzoo.list_models()
                    if name.startswith(("mobilenet_v3", "shufflenet", "efficientnet"))}


@pytest.mark.parametrize("name", HEAVY)
def test_ptq_of_every_family_follows_float_on_held_out_images(name):
    """Calibrated on one set of images, compared on another. Measured on trained-like networks
    (branch scale 0.1; x86, 2026-11-28): int8 cosine 0.95 (mobilenet_v2) to 0.995, while 4-bit
    activations (a broken observer) reach 0.57 to 0.83: the 0.94 floor catches that regression.
    Top-1 agreement among 10 near-equal random logits is noise (0.56 to 1.0 at 8 bits across torch
    2.10 to 2.15 and one or two threads), so its floor only catches a model that ignores its input;
    the trained CIFAR-10 models carry the agreement claims (test_onnx_export, test_weights_folder)."""
    model = trained_like(name, 0.1)
    held_out = images(16, seed=2, size=input_size(name))
    with torch.no_grad():
        reference = model(held_out)
    assert_varies(reference)
    backend = FIDELITY_BACKEND.get(name, "x86")
    int8 = quantized_copy(model, backend, calibration=images(16, seed=1, size=input_size(name)))
    output = run(int8, held_out, backend)
    assert cosine(reference, output) > 0.94
    assert (reference.argmax(1) == output.argmax(1)).float().mean() >= 0.5


def test_an_uncalibrated_int8_structure_is_far_below_the_floor():
    model = fresh("resnet50")
    calibration = images(16, seed=1)
    with torch.no_grad():
        reference = model(calibration)
    skeleton = qzoo.int8_skeleton(copy.deepcopy(model))
    assert cosine(reference, run(skeleton, calibration)) < 0.6  # measured: 0.51


# the family's smallest member at the 0.99; the deeper ones (16 blocks) at what they measure with
# a margin: resnet50 0.9896 / 0.9903 and resnext50 0.9938 / 0.9930 (1 / 2 threads, AMD EPYC, 2026-11-30;
# other calibration seeds 0.987 to 0.991), above 0.99 on the Xeon the bound was first set on
RESIDUAL_COSINE = {"resnet18": 0.99, "resnet50": 0.985, "resnext50_32x4d": 0.985}


@pytest.mark.parametrize("name", RESIDUAL_COSINE)
def test_ptq_keeps_cosine_above_0_99_on_a_network_with_trained_like_residual_branches(name):
    """Trained residual networks have small residual branches; scaling each branch's last
    BatchNorm to 0.2 gives a random network that stability, where cosine 0.99 is meaningful
    (0.985 for the 50-layer ones, whose int8 error builds up over twice the blocks)."""
    model = trained_like(name, 0.2)
    calibration = images(16, seed=1)
    with torch.no_grad():
        reference = model(calibration)
    assert_varies(reference)
    assert cosine(reference, run(quantized_copy(model, "x86", calibration=calibration), calibration)) > RESIDUAL_COSINE[name]


@pytest.mark.parametrize("backend", qzoo.BACKENDS)
def test_every_backend_quantizes_weights_per_channel(backend):
    for qat in (False, True):
        weight_observer = qzoo.get_qconfig(backend, qat=qat).weight()
        assert weight_observer.qscheme == torch.per_channel_symmetric
    int8 = quantized_copy(fresh("mobilenet_v2"), backend)
    weights = int8_weights(int8)
    assert len(weights) == 52
    assert all(w.qscheme() == torch.per_channel_affine for w in weights)
    depthwise = int8.features[2].conv[1][0]
    assert depthwise.groups == depthwise.in_channels and depthwise.weight().q_per_channel_scales().numel() > 1


def test_activation_observer_choice_and_explicit_qconfig_override():
    assert type(qzoo.get_qconfig("x86").activation()) is qzoo.quantization.HistogramObserver  # torch's, faster
    assert type(qzoo.get_qconfig("x86", activation="minmax").activation()).__name__ == "MinMaxObserver"
    assert qzoo.get_qconfig("x86").activation().quant_max == 127
    assert qzoo.get_qconfig("qnnpack").activation().quant_max == 255
    with pytest.raises(ValueError, match="histogram, minmax"):
        qzoo.get_qconfig("x86", activation="percentile")
    with pytest.raises(ValueError, match="PTQ only"):
        qzoo.get_qconfig("x86", qat=True, activation="histogram")
    per_tensor = qzoo.get_qconfig("x86")._replace(weight=torch.ao.quantization.default_weight_observer)
    int8 = quantized_copy(fresh(), "x86", qconfig=per_tensor)
    assert all(w.qscheme() == torch.per_tensor_affine for w in int8_weights(int8))


def test_minmax_and_histogram_both_give_faithful_int8():
    model = fresh()
    x = images(16, seed=1)
    with torch.no_grad():
        reference = model(x)
    for activation in qzoo.ACTIVATION_OBSERVERS:
        qconfig = qzoo.get_qconfig("x86", activation=activation)
        assert cosine(reference, run(quantized_copy(model, qconfig=qconfig), x)) > 0.98


def test_calibrate_accepts_pairs_counts_batches_and_shows_progress(capsys):
    model = qzoo.prepare_ptq(fresh())
    batches = [(x, torch.zeros(len(x), dtype=torch.long)) for x in images(16, seed=1).split(4)]

    def data():
        yield from batches[:2]
        raise AssertionError("calibrate read past num_batches")

    assert qzoo.calibrate(model, data(), num_batches=2) is model
    assert "calibrate" in capsys.readouterr().err
    observer = model.quant.activation_post_process
    assert torch.isfinite(observer.min_val)


def test_calibrate_refuses_empty_data_nan_integer_images_and_unprepared_models():
    model = qzoo.prepare_ptq(fresh())
    with pytest.raises(ValueError, match="empty"):
        qzoo.calibrate(model, [], progress=False)
    bad = images(8, seed=1)
    bad[5, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="batch 1 contains NaN"):
        qzoo.calibrate(model, bad.split(4), progress=False)
    with pytest.raises(ValueError, match="batch 0 contains NaN or Inf"):
        qzoo.calibrate(model, [torch.full((1, 3, 8, 8), float("inf"))], progress=False)
    with pytest.raises(TypeError, match="float32 images"):
        qzoo.calibrate(model, [torch.zeros(1, 3, 8, 8, dtype=torch.uint8)], progress=False)
    with pytest.raises(TypeError, match=r"one Tensor of shape \(8, 3, 64, 64\), which yields one image at a time: "
                                        r"pass batches, e.g. \[images\] or images.split\(32\)"):
        qzoo.calibrate(model, images(8, seed=1), progress=False)
    qzoo.calibrate(model, images(8, seed=1).view(2, 4, 3, 64, 64), progress=False)  # a stack of batches is fine
    with pytest.raises(ValueError, match="positive"):
        qzoo.calibrate(model, images(4, 1).split(2), num_batches=0, progress=False)
    with pytest.raises(RuntimeError, match="prepare_ptq"):
        qzoo.calibrate(fresh(), images(4, 1).split(2), progress=False)


def test_quantize_leaves_the_float_model_alone_and_says_what_a_failed_inplace_call_changed():
    """A failed call on a copy leaves the caller's model as it was; with ``inplace=True`` the model is already
    fused and observed when calibration fails, and the error says so instead of leaving a silent half-state."""
    model = fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = images(4, seed=1)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN") as failed:
        qzoo.quantize(model, [bad], progress=False)
    assert not getattr(failed.value, "__notes__", None)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="NaN") as failed:
        qzoo.quantize(model, [bad], progress=False, inplace=True)
    assert failed.value.__notes__ == ["qzoo.quantize(inplace=True) stopped after preparing the model: it is now "
                                      "fused and observed, not the float model passed in. Build it again, or pass "
                                      "inplace=False."]
    assert model.state_dict().keys() != before.keys()  # the observers the note speaks of
    int8 = qzoo.quantize(fresh(), [images(4, seed=1)], progress=False, inplace=True)
    assert qzoo.quantization.is_int8(int8)


@pytest.mark.parametrize("prepare", [qzoo.prepare_ptq, qzoo.prepare_qat])
def test_prepare_refuses_models_whose_int8_version_could_not_run(prepare):
    """A model without QuantStub (torchvision's own ResNet) would convert to an int8 model that cannot take
    float images, and half-precision weights fail deep in the observers: both are refused before any change,
    naming the fix; the qzoo model built from the torchvision model's state_dict prepares."""
    plain = torchvision.models.resnet18(num_classes=NUM_CLASSES)
    with pytest.raises(TypeError, match=r"ResNet has no QuantStub, .*\(qzoo.get_model\(name\)\) and load your "
                                        "state_dict"):
        prepare(plain)
    assert not any(hasattr(m, "activation_post_process") for m in plain.modules())
    with pytest.raises(TypeError, match=r"torch.float16 weights; .* call model.float\(\) first"):
        prepare(fresh().half())
    rebuilt = qzoo.resnet18(num_classes=NUM_CLASSES)
    rebuilt.load_state_dict(plain.state_dict())
    assert qzoo.model_record(prepare(rebuilt)).mode == ("ptq" if prepare is qzoo.prepare_ptq else "qat")


def test_workflow_refuses_out_of_order_steps():
    with pytest.raises(RuntimeError, match="calibrate"):
        qzoo.convert(qzoo.prepare_ptq(fresh()))
    with pytest.raises(RuntimeError, match="prepared model"):
        qzoo.convert(fresh())
    prepared = qzoo.prepare_ptq(fresh())
    with pytest.raises(RuntimeError, match="already prepared"):
        qzoo.prepare_ptq(prepared)
    with pytest.raises(RuntimeError, match="already prepared"):
        qzoo.prepare_qat(prepared)
    with pytest.raises(RuntimeError, match="already fused"):
        prepared.fuse_model()
    int8 = quantized_copy(fresh())
    for step in (qzoo.prepare_ptq, qzoo.convert):
        with pytest.raises(RuntimeError, match="already converted"):
            step(int8)
    ptq_fused = fresh()
    ptq_fused.fuse_model()
    with pytest.raises(RuntimeError, match="fused for PTQ"):
        qzoo.prepare_qat(ptq_fused)
    qat_fused = fresh().train()
    qat_fused.fuse_model()
    with pytest.raises(RuntimeError, match="fused for QAT"):
        qzoo.prepare_ptq(qat_fused)
    for backend in ("tpu", "X86"):
        with pytest.raises(ValueError, match="x86, fbgemm, qnnpack, onednn"):
            qzoo.prepare_ptq(fresh(), backend)


def test_convert_audits_every_output_scale():
    """An observer that recorded an infinite range would give a scale of inf: convert refuses the model."""
    model = qzoo.prepare_ptq(fresh(), qconfig=qzoo.get_qconfig(activation="minmax"))
    qzoo.calibrate(model, images(4, 1).split(2), progress=False)
    observer = model.layer1[0].conv1.activation_post_process
    observer.max_val.fill_(float("inf"))
    with pytest.raises(RuntimeError, match="invalid output scale at layer1.0.conv1: inf"):
        qzoo.convert(model)


def test_convert_audits_for_float_layers_left_behind():
    """A layer without a qconfig stays float after torch's convert and fails at run time."""
    model = fresh()
    model.fuse_model()
    model.fc.qconfig = None
    model.qconfig = qzoo.get_qconfig("x86")
    torch.ao.quantization.prepare(model, inplace=True)
    update_record(model, backend="x86", mode="ptq")
    qzoo.calibrate(model, images(4, 1).split(2), progress=False)
    with pytest.raises(RuntimeError, match="float layers behind.*fc"):
        qzoo.convert(model)


def test_engine_is_set_for_the_work_and_restored():
    before = torch.backends.quantized.engine
    int8 = quantized_copy(fresh(), "qnnpack")
    assert torch.backends.quantized.engine == before
    assert qzoo.model_backend(int8) == "qnnpack"
    with qzoo.quantized_engine(int8) as name:
        assert name == "qnnpack" == torch.backends.quantized.engine
    with pytest.raises(KeyError), qzoo.quantized_engine("onednn"):
        raise KeyError("boom")
    assert torch.backends.quantized.engine == before
    with pytest.raises(ValueError, match="never prepared"), qzoo.quantized_engine(fresh()):
        pass


def test_int8_model_runs_and_loads_under_its_own_backend_whatever_the_global_engine():
    model = fresh()
    x = images(8, seed=5)
    int8 = quantized_copy(model, "qnnpack")
    expected = run(int8, x, "qnnpack")
    assert torch.backends.quantized.engine != "qnnpack"
    with torch.inference_mode():
        assert torch.equal(int8(x), expected)
    reloaded = qzoo.int8_skeleton(qzoo.resnet18(num_classes=NUM_CLASSES), "qnnpack")
    reloaded.load_state_dict(int8.state_dict())
    with torch.inference_mode():
        assert torch.equal(reloaded(x), expected)
    assert torch.backends.quantized.engine != "qnnpack"


def test_int8_model_names_float32_cpu_images_for_other_inputs():
    int8 = qzoo.int8_skeleton(qzoo.resnet18(num_classes=NUM_CLASSES))
    for dtype in (torch.float16, torch.float64, torch.uint8):
        with pytest.raises(TypeError, match="float32 CPU images, got torch.(float16|float64|uint8)"):
            int8(torch.zeros(1, 3, 32, 32, dtype=dtype))
    with pytest.raises(ValueError, match=r"shaped \(N, C, H, W\), got \(3, 32, 32\): add the batch dimension"):
        int8(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"got \(1, 1, 3, 32, 32\)$"):
        int8(torch.zeros(1, 1, 3, 32, 32))
    with torch.inference_mode():
        assert int8(torch.zeros(1, 3, 32, 32)).shape == (1, NUM_CLASSES)


@pytest.mark.parametrize("name", HEAVY)
@pytest.mark.parametrize("export", ["trace", "script"])
def test_torchscript_save_load_round_trip_is_bit_exact(name, export):
    size = input_size(name)
    int8 = quantized_copy(fresh(name), calibration=images(16, seed=1, size=size))
    x = images(4, seed=5, size=size)
    expected = run(int8, x)
    assert_varies(expected)
    with qzoo.quantized_engine(int8), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scripted = torch.jit.trace(int8, x) if export == "trace" else torch.jit.script(int8)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        output = run(torch.jit.load(buffer), x)
    assert torch.equal(getattr(output, "logits", output), expected)
    # qzoo's own code warns only where a scripted GoogLeNet or Inception returns its named tuple (torch's
    # quantized modules and its deprecation of TorchScript warn as they do for any model)
    package = Path(qzoo.__file__).parent
    own = {str(w.message) for w in caught if Path(w.filename).resolve().is_relative_to(package)}
    assert {message for message in own if not message.startswith("a scripted ")} == set()


def test_qat_trains_then_converts_to_an_int8_model_that_matches_its_fake_quant_forward():
    model = qzoo.prepare_qat(fresh())
    assert model.training
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    for x in images(32, seed=1).split(8):
        loss = nn.functional.cross_entropy(model(x), torch.arange(len(x)) % NUM_CLASSES)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    x = images(8, seed=5)
    with torch.no_grad():
        fake_quant = model(x)
    int8 = qzoo.convert(model)
    assert not int8.training
    # fake-quant simulates int8 but rounds some steps (requantization, adds) differently
    assert cosine(fake_quant, run(int8, x)) > 0.97


def test_qat_convert_refuses_a_model_that_never_ran():
    with pytest.raises(RuntimeError, match="train a few steps"):
        qzoo.convert(qzoo.prepare_qat(fresh()))


def test_qzoo_keeps_torch_deprecation_noise_out_of_users_faces():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = qzoo.resnet18(prepare="ptq", num_classes=NUM_CLASSES)
        qzoo.calibrate(model, images(4, 1).split(2), progress=False)
        qzoo.convert(model)
        qzoo.int8_skeleton(qzoo.mobilenet_v2(), "qnnpack")
        qzoo.mobilenet_v2(prepare="qat")
    assert [str(w.message)[:80] for w in caught] == []


def test_misuse_warnings_still_reach_the_user():
    model = copy.deepcopy(qzoo.prepare_ptq(fresh()))
    with pytest.warns(UserWarning, match="must run observer"):
        model.quant.activation_post_process.calculate_qparams()


def _observer_states(observer) -> tuple:
    return observer.histogram.clone(), observer.min_val.clone(), observer.max_val.clone()


def test_qzoo_histogram_observer_keeps_torchs_counts_bit_for_bit():
    """qzoo's faster count must leave every histogram, range and qparam exactly as torch's."""
    import torch.ao.quantization as tq

    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 8, 20, 20, generator=generator).relu() * scale for scale in (1.0, 0.5, 3.0)]
    batches += [torch.randn(4, 8, 20, 20, generator=generator) * 2,  # negative values widen the range down
                torch.full((2, 8, 5, 5), 1.5),  # a constant batch inside the range
                batches[0].contiguous(memory_format=torch.channels_last),
                torch.randn(300_000, generator=generator) * 10]  # more than one chunk, widest range
    for first in (batches[0], torch.full((3, 4), 0.25)):  # a constant first batch: histc widens its range
        reference = tq.HistogramObserver(dtype=torch.quint8, quant_min=0, quant_max=127)
        fast = qzoo.quantization.HistogramObserver(dtype=torch.quint8, quant_min=0, quant_max=127)
        for batch in [first, *batches]:
            reference(batch)
            fast(batch)
            for expected, actual in zip(_observer_states(reference), _observer_states(fast)):
                assert torch.equal(actual, expected)
        # merging a histogram into a wider range spreads counts as fractions: the total stays
        assert fast.histogram.sum().item() == pytest.approx(sum(b.numel() for b in [first, *batches]))
        assert all(torch.equal(a, b) for a, b in zip(fast.calculate_qparams(), reference.calculate_qparams()))
    with pytest.warns(UserWarning, match="torch.inf detected"):  # infinities take torch's own path
        fast(torch.tensor([1.0, float("inf")]))


def _torch_ptq(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """PTQ the way torch's eager-mode tutorial does it, with torch's own histogram observer."""
    import torch.ao.quantization as tq

    model.fuse_model(is_qat=False)
    model.qconfig = qzoo.get_qconfig("x86")._replace(
        activation=tq.HistogramObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=127))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare(model, inplace=True)
        with torch.no_grad():
            for batch in batches:
                model(batch)
        with qzoo.quantized_engine("x86"):
            return tq.convert(model, inplace=True)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_ptq_gives_the_int8_model_of_torchs_own_flow_bit_for_bit(name):
    """qzoo observes each fused output once (torch twice) and counts faster: same scales, same bits."""
    model = fresh(name)
    batches = list(images(12, seed=1).split(4))
    expected = _torch_ptq(copy.deepcopy(model), batches)
    prepared = qzoo.prepare_ptq(copy.deepcopy(model), "x86")
    calls = []
    for module in prepared.modules():
        if hasattr(module, "activation_post_process") and isinstance(module, nn.Sequential):
            module.activation_post_process.register_forward_pre_hook(lambda m, args: calls.append(m))
    qzoo.calibrate(prepared, batches, progress=False)
    assert calls and len(calls) == len(set(map(id, calls))) * len(batches)  # once per fused module per batch
    int8 = qzoo.convert(prepared)
    expected_state, state = expected.state_dict(), int8.state_dict()
    assert state.keys() == expected_state.keys()
    for key, value in expected_state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(state[key].int_repr() if value.is_quantized else state[key],
                               value.int_repr() if value.is_quantized else value), key
    x = images(4, seed=5)
    outputs = run(int8, x)
    assert_varies(outputs)
    assert torch.equal(outputs, run(expected, x))


def test_per_tensor_weights_give_one_scale_per_layer():
    model = fresh_model("mobilenet_v2")
    int8 = quantized_copy(model, qconfig=qzoo.get_qconfig("x86", weights="per_tensor"))
    conv = int8.features[1].conv[0][0]
    assert conv.weight().qscheme() == torch.per_tensor_affine
    assert quantized_copy(model).features[1].conv[0][0].weight().qscheme() == torch.per_channel_affine
    qat = qzoo.prepare_qat(qzoo.mobilenet_v2(num_classes=10), qconfig=qzoo.get_qconfig("x86", qat=True, weights="per_tensor"))
    assert qat.features[1].conv[0][0].weight_fake_quant.qscheme == torch.per_tensor_symmetric
    with pytest.raises(ValueError, match="choose 'per_channel' or 'per_tensor'"):
        qzoo.get_qconfig("x86", weights="per_row")
