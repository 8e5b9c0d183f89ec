"""Float fallback: named layers stay float inside an int8 model, with their own quantize/dequantize
boundaries; exact in float, a bad layer's error gone in int8, saved, loaded and run like any int8 model."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from helpers import fresh_model, images, make_image_folder, run
from torch import nn

import qzoo
import qzoo.cli
from qzoo import workflow
from qzoo.demo import SAMPLE_ARCHIVE
from qzoo.quantization import FloatLayer, FloatOps, ReLU6AsRange

KEPT = ["features.5.conv.1.0", "features.5.skip_add"]  # a depthwise conv block and a residual add (MobileNetV2)


def _sqnr(reference: torch.Tensor, measured: torch.Tensor) -> float:
    return 10 * math.log10(float(reference.square().sum() / (measured - reference).square().sum()))


def _minmax(model: nn.Module, **kw) -> nn.Module:
    prepared = qzoo.prepare_ptq(copy.deepcopy(model), "x86", qzoo.get_qconfig("x86", activation="minmax"), **kw)
    return qzoo.calibrate(prepared, images(32, 1).split(8), progress=False)


def test_kept_layers_change_nothing_in_float_and_become_float_islands_in_int8():
    model = fresh_model("mobilenet_v2")
    plain, kept = _minmax(model), _minmax(model, float_layers=KEPT)
    x = images(8, 2)
    with torch.no_grad():
        assert torch.equal(kept(x), plain(x))  # prepared: the stubs pass through
    assert isinstance(kept.features[5].conv[1][0], FloatLayer) and isinstance(kept.features[5].skip_add, FloatOps)
    assert qzoo.model_record(kept).float_layers == tuple(KEPT)
    int8 = qzoo.convert(kept)
    island = int8.features[5].conv[1][0]
    assert type(island.layer[0]) is nn.Conv2d and island.layer[0].weight.dtype == torch.float32
    assert type(island.quant).__name__ == "Quantize" and type(island.dequant).__name__ == "DeQuantize"
    assert type(int8.features[6].conv[1][0]).__name__ == "ConvReLU2d" and int8.features[6].conv[1][0].weight().is_quantized
    assert run(int8, x).shape == (8, 10)


def test_keeping_a_badly_quantized_layer_float_removes_its_error():
    model = fresh_model("mobilenet_v2")
    damaged = _minmax(model)
    dict(damaged.named_modules())[KEPT[0]].activation_post_process.max_val *= 50  # its int8 range 50x too wide
    kept = _minmax(model, float_layers=KEPT[:1])
    x = images(16, 3)
    with torch.no_grad():
        reference = damaged(x)
    all_int8 = _sqnr(reference, run(qzoo.convert(damaged), x))
    undamaged = _sqnr(reference, run(qzoo.convert(_minmax(model)), x))
    with_float = _sqnr(reference, run(qzoo.convert(kept), x))
    # measured: damaged 2.5 dB, undamaged 4.8 dB, damaged layer kept float 4.7 dB (a random, noisy network)
    assert with_float > all_int8 + 1.5 and with_float > undamaged - 0.5  # the damage is gone


def test_a_relu6_after_a_kept_conv_still_becomes_its_output_range():
    lite = qzoo.efficientnet_lite0(num_classes=10)
    prepared = qzoo.prepare_ptq(lite, float_layers=["features.2.0.depthwise.conv"])
    unit = prepared.features[2][0].depthwise
    assert isinstance(unit.conv, FloatLayer) and isinstance(unit.relu6, ReLU6AsRange)
    qzoo.calibrate(prepared, images(8, 4).split(4), progress=False)
    observer = unit.conv.quant.activation_post_process
    assert float(observer.min_val) >= 0.0 and float(observer.max_val) <= 6.0


def test_int8_with_float_layers_saves_loads_and_optimizes_bit_exactly(tmp_path):
    int8 = qzoo.convert(_minmax(fresh_model("mobilenet_v2"), float_layers=KEPT))
    x = images(4, 5)
    expected = run(int8, x)
    folder = qzoo.save_pretrained(int8, tmp_path / "kept")
    loaded = qzoo.from_pretrained(folder)
    assert qzoo.model_record(loaded).float_layers == tuple(KEPT)
    assert torch.equal(run(loaded, x), expected)
    assert torch.equal(qzoo.optimize_for_inference(loaded, x)(x), expected)


@pytest.mark.parametrize(("name", "message"), [
    ("features.99", "has no layer 'features.99'"),
    ("quant", "quant is a QuantStub"),
    ("features.1.conv", "is a Sequential"),
])
def test_layers_that_cannot_stay_float_are_named(name, message):
    with pytest.raises(ValueError, match=message):
        qzoo.prepare_ptq(qzoo.mobilenet_v2(num_classes=10), float_layers=[name])


def test_kept_layers_export_to_onnx_runtime_on_a_trained_model():
    """The shipped CIFAR-10 MobileNetV2 with its stem, a residual add and the classifier kept float: ORT
    follows the torch int8 model as closely as without kept layers, at the same accuracy (measured on
    500 sample images: agreement 96.2 % both ways, eager 81.8 %, ORT 81.2 % vs 81.0 %)."""
    loaded = workflow.load_model("mobilenet_v2.cifar10_float", progress=False)
    transforms = loaded.transforms
    calibration = workflow.load_images(str(SAMPLE_ARCHIVE), "train", transforms, loaded.categories, progress=False)
    test = workflow.load_images(str(SAMPLE_ARCHIVE), "test", transforms, loaded.categories, progress=False)
    x, labels = next(iter(test.batches(500, mean=transforms.mean, std=transforms.std)))
    measured = {}
    for name, kept in (("all int8", []), ("kept", ["features.0.0", "features.5.skip_add", "classifier.1"])):
        int8 = qzoo.quantize(loaded.model, calibration.batches(100, mean=transforms.mean, std=transforms.std),
                             float_layers=kept, progress=False)
        expected = run(int8, x)
        actual = qzoo.optimize_for_inference(int8, x[:2], runtime="onnxruntime")(x)
        measured[name] = {"agreement": (actual.argmax(1) == expected.argmax(1)).float().mean().item(),
                          "eager": (expected.argmax(1) == labels).float().mean().item(),
                          "ort": (actual.argmax(1) == labels).float().mean().item()}
    assert measured["kept"]["agreement"] >= measured["all int8"]["agreement"] - 0.01
    assert measured["kept"]["eager"] > 0.7 and abs(measured["kept"]["ort"] - measured["kept"]["eager"]) <= 0.015


def test_cli_ptq_keeps_the_layers_it_is_given(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "int8"
    args = ["ptq", "resnet18", "--data", str(data), "--image-size", "32", "--calib-images", "12", "--json"]
    assert qzoo.cli.main([*args, "--float-layers", "conv1,layer1.0.add_relu", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["float_layers"] == ["conv1", "layer1.0.add_relu"]
    config = json.loads((out / "config.json").read_text())
    assert config["float_layers"] == ["conv1", "layer1.0.add_relu"] and "--float-layers conv1," in config["recipe"]
    assert qzoo.cli.main(["eval", str(out), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["acc1"] == report["int8"]["acc1"]
    assert qzoo.cli.main([*args, "--float-layers", "layer9", "--out", str(tmp_path / "bad")]) == 2
    assert "has no layer 'layer9'" in capsys.readouterr().err
