"""Float logits: an int8 model whose output layer keeps its sum unrounded (int8 weights and inputs, float
output); exact against that sum, saved, loaded, traced and exported like any int8 model, and without ties."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import HEAVY, assert_varies, fresh_model, images, input_size, quantized_copy, run

import qzoo
import qzoo.cli
from qzoo.quantization import FloatLogitsLinear

NAMES = [name for name in HEAVY if name != "resnet50"]  # each family's smallest member


def _head_input(model: torch.nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.get_submodule(layer).register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        run(model, x)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("name", NAMES)
def test_the_output_layer_gives_its_int8_sum_unrounded(name):
    size = input_size(name)
    int8 = quantized_copy(fresh_model(name), calibration=images(16, seed=1, size=size))
    x = images(8, seed=2, size=size)
    rounded = run(int8, x)
    logits = qzoo.float_logits(copy.deepcopy(int8))
    layer = qzoo.model_record(logits).float_logits
    assert isinstance(logits.get_submodule(layer), FloatLogitsLinear) and qzoo.is_int8(logits)
    original = int8.get_submodule(layer)
    head_input = _head_input(logits, layer, x)
    assert head_input.is_quantized  # the layer before still hands over int8
    expected = torch.nn.functional.linear(head_input.dequantize(), original.weight().dequantize(), original.bias())
    actual = run(logits, x)
    assert_varies(actual)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    # the int8 output grid (codes 0..255): inside it the rounded logits lie within half a step of the float
    # ones; outside it int8 clamps to its ends (calibrated on 16 images, some logits of others fall beyond)
    step, low = original.scale, -original.zero_point * original.scale
    high = low + 255 * step
    inside = (expected >= low) & (expected <= high)
    assert (actual - rounded)[inside].abs().max() <= step / 2 + 1e-5
    assert torch.allclose(rounded[~inside], expected[~inside].clamp(low, high), atol=1e-5)


def test_logits_no_longer_tie_where_int8_rounding_made_them_equal():
    """MobileNetV2 on 10 classes with a coarse output grid: rounded logits tie, float ones do not, and
    where they do not tie both give the same class."""
    model = fresh_model("mobilenet_v2")
    int8 = quantized_copy(model, calibration=images(16, seed=1))
    x = images(256, seed=3)
    rounded = run(int8, x)
    logits = run(qzoo.float_logits(copy.deepcopy(int8)), x)
    tied = (rounded == rounded.max(1, keepdim=True).values).sum(1) > 1
    assert tied.sum() > 0, "this check needs rounded logits that tie"
    assert ((logits == logits.max(1, keepdim=True).values).sum(1) == 1).all()
    assert torch.equal(logits.argmax(1)[~tied], rounded.argmax(1)[~tied])


def test_saved_loaded_traced_and_exported_like_any_int8_model(tmp_path):
    plain = quantized_copy(fresh_model("resnet18"), calibration=images(16, seed=1))
    int8 = qzoo.float_logits(copy.deepcopy(plain))
    x = images(4, seed=5)
    expected = run(int8, x)
    folder = qzoo.save_pretrained(int8, tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["float_logits"] == "fc"
    assert "; float logits (unrounded output) from fc" in (folder / "README.md").read_text()
    loaded = qzoo.from_pretrained(folder)
    assert qzoo.model_record(loaded).float_logits == "fc" and torch.equal(run(loaded, x), expected)
    with torch.inference_mode():
        assert torch.equal(qzoo.optimize_for_inference(loaded, x[:2])(x), expected)
    onnx_bytes = qzoo.export_onnx(loaded)
    assert qzoo.onnx_from_pretrained(folder) == onnx_bytes
    x = images(64, seed=6)
    ort, ort_rounded = (qzoo.OnnxRuntimeModel(data, threads=1)(x) for data in (onnx_bytes, qzoo.export_onnx(plain)))
    assert ((ort == ort.max(1, keepdim=True).values).sum(1) == 1).all()  # no ties in ONNX Runtime either
    step, low = plain.fc.scale, -plain.fc.zero_point * plain.fc.scale  # ORT's rounded graph but the last rounding
    inside = (ort >= low) & (ort <= low + 255 * step)
    assert 0 < (ort - ort_rounded)[inside].abs().max() <= step / 2 + 1e-5
    assert torch.allclose(ort_rounded[~inside], ort[~inside].clamp(low, low + 255 * step), atol=1e-5)


def test_what_cannot_give_float_logits_is_refused():
    with pytest.raises(ValueError, match="float_logits takes an int8 model"):
        qzoo.float_logits(qzoo.resnet18(num_classes=10))
    int8 = quantized_copy(fresh_model("resnet18"), calibration=images(16, seed=1))
    with pytest.raises(ValueError, match="is a ConvReLU2d; only a converted Linear"):
        qzoo.float_logits(copy.deepcopy(int8), layer="conv1")
    with pytest.raises(ValueError, match="no layer 'head'"):
        qzoo.float_logits(copy.deepcopy(int8), layer="head")
    head_kept_float = quantized_copy(fresh_model("resnet18"), calibration=images(16, seed=1), float_layers=["fc"])
    with pytest.raises(ValueError, match="the last linear layer, fc, is kept float"):
        qzoo.float_logits(head_kept_float)
    once = qzoo.float_logits(int8)
    with pytest.raises(RuntimeError, match="fc already computes its output in float"):
        qzoo.float_logits(once)
    with pytest.raises(ValueError, match="float_logits belong to the eager flow"):
        qzoo.quantize(qzoo.resnet18(num_classes=10).eval(), [images(2, seed=1)], flow="pt2e", float_logits=True)


def test_qzoo_ptq_float_logits_records_it_and_counts_no_ties(tmp_path, capsys):
    """The shipped demo data: plain PTQ leaves images tied at the top, --float-logits none."""
    from qzoo.demo import SAMPLE_ARCHIVE, demo_weights_folder

    reports = []
    for flags in ([], ["--float-logits"]):
        out = tmp_path / ("logits" if flags else "plain")
        assert qzoo.cli.main(["ptq", str(demo_weights_folder()), "--data", str(SAMPLE_ARCHIVE), "--calib-images",
                              "200", "--out", str(out), "--json", *flags]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    plain, logits = reports
    assert plain["int8"]["ties"] > 0 and logits["int8"]["ties"] == 0
    assert plain["float_logits"] is None and logits["float_logits"] == "classifier.1"
    assert "--float-logits" in json.loads((tmp_path / "logits" / "config.json").read_text())["recipe"]
    assert abs(logits["int8"]["acc1"] - plain["int8"]["acc1"]) <= 1.5  # the same int8 model but for the rounding


def test_qzoo_qat_float_logits_saves_a_model_whose_logits_are_float(tmp_path, capsys):
    from helpers import make_image_folder

    data = make_image_folder(tmp_path / "data")
    assert qzoo.cli.main(["qat", "resnet18", "--data", str(data), "--image-size", "32", "--epochs", "1",
                          "--batch-size", "12", "--out", str(tmp_path / "q"), "--float-logits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["int8"]["ties"] == 0
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["float_logits"] == "fc" and config["recipe"].endswith("--float-logits")
    assert isinstance(qzoo.from_pretrained(tmp_path / "q").fc, FloatLogitsLinear)
