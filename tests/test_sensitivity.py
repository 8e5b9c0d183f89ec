"""The per-layer sensitivity report and the int8 simulation under it: faithful to converted int8,
exact in float, its replay shortcut equal to full passes, and a damaged layer found first."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from helpers import fresh_model, images, make_image_folder, run

import qzoo
import qzoo.cli
from qzoo import sensitivity, workflow
from qzoo.demo import SAMPLE_ARCHIVE
from qzoo.quantization import Int8Simulation, simulation_layers


def _sqnr(reference: torch.Tensor, measured: torch.Tensor) -> float:
    return 10 * math.log10(float(reference.square().sum() / (measured - reference).square().sum()))


def _calibrated(model: torch.nn.Module, backend: str = "x86", **kw) -> torch.nn.Module:
    prepared = qzoo.prepare_ptq(copy.deepcopy(model), backend, **kw)
    return qzoo.calibrate(prepared, images(32, 1).split(8), progress=False)


@pytest.fixture(scope="module")
def lite0():
    """EfficientNet-Lite0 with its ImageNet weights: a trained network (96-pixel synthetic images)."""
    return qzoo.efficientnet_lite0(weights="DEFAULT").eval()


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_lite0"])
def test_simulation_of_every_layer_tracks_the_converted_int8_model(name, backend, lite0):
    model = lite0 if name == "efficientnet_lite0" else fresh_model(name)
    prepared = _calibrated(model, backend)
    x = images(16, 2, 96 if name == "efficientnet_lite0" else 64)
    real = run(qzoo.convert(copy.deepcopy(prepared)), x, backend)
    simulation = Int8Simulation(prepared)
    with torch.no_grad(), simulation.quantizing(simulation.layers):
        simulated = prepared(x)
    with torch.no_grad():
        floating = prepared(x)
    # measured SQNR vs real int8, simulated / float: resnet18 25.9 / 15.7 (x86), 23.4 / 20.3 (qnnpack);
    # mobilenet_v2 14.5 / 3.5, 7.7 / 5.6; Lite0 19.2 / 15.1, 22.6 / 16.9. The first layers agree to
    # 40-75 dB (next test); deeper, random networks amplify the kernels' different tie-breaking.
    assert _sqnr(real, simulated) > _sqnr(real, floating) + 1.0
    assert _sqnr(real, simulated) > 7.0


def test_simulation_rounds_first_layers_as_the_kernels_do():
    prepared = _calibrated(fresh_model("resnet18"))
    int8 = qzoo.convert(copy.deepcopy(prepared))
    x = images(8, 3)
    real = {}
    for name in ("quant", "conv1"):
        dict(int8.named_modules())[name].register_forward_hook(
            lambda module, args, output, name=name: real.__setitem__(name, output.dequantize()))
    run(int8, x)
    simulation = Int8Simulation(prepared)
    with torch.no_grad(), sensitivity._capturing(simulation) as simulated, simulation.quantizing(simulation.layers):
        prepared(x)
    assert torch.equal(simulated["quant"], real["quant"])  # the input: the same codes
    assert _sqnr(real["conv1"], simulated["conv1"]) > 40  # the first conv: rare one-code ties apart


def test_simulating_nothing_is_the_float_model_and_every_run_leaves_it_as_it_was(lite0):
    prepared = _calibrated(lite0)
    x = images(4, 5, 96)
    with torch.no_grad():
        floating = prepared(x)  # a plain call: observers record it
        before = {key: value.clone() for key, value in prepared.state_dict().items()}
        simulation = Int8Simulation(prepared)
        with simulation.quantizing(()):
            assert torch.equal(prepared(x), floating)
        with simulation.quantizing(simulation.layers):
            assert not torch.allclose(prepared(x), floating)
        after = {key: value.clone() for key, value in prepared.state_dict().items()}  # nothing observed, weights back
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        assert torch.equal(prepared(x), floating)
    with pytest.raises(ValueError, match="no quantized layer named \\['nope'\\]"):
        with simulation.quantizing(["nope"]):
            pass


def test_the_replayed_passes_equal_full_passes(lite0):
    """The report starts each per-layer pass at its layer; doing every pass in full gives the same numbers."""
    prepared = _calibrated(lite0)
    x = images(8, 6, 96)
    report = sensitivity.sensitivity(prepared, [x], progress=False)
    simulation = Int8Simulation(prepared)
    names = list(simulation.layers)
    assert [layer["name"] for layer in report["layers"]][:3] == ["quant", "features.0.conv", "features.1.0.depthwise.conv"]
    with torch.no_grad(), sensitivity._out_of_place(prepared):
        floating = prepared(x)
        for layer in (report["layers"][1], report["layers"][30], report["layers"][-1]):
            with simulation.quantizing([layer["name"]]):
                alone = prepared(x)
            with simulation.quantizing(set(names) - {layer["name"]}):
                kept = prepared(x)
            for measured, key in ((alone, "only_quantized"), (kept, "only_float")):
                assert layer[key]["sqnr_db"] == pytest.approx(_sqnr(floating, measured), abs=1e-3)
                agreement = 100.0 * float((measured.argmax(1) == floating.argmax(1)).float().mean())
                assert layer[key]["agreement"] == pytest.approx(agreement)


def test_a_layer_given_a_bad_range_tops_the_report():
    prepared = _calibrated(fresh_model("mobilenet_v2"), qconfig=qzoo.get_qconfig("x86", activation="minmax"))
    damaged = "features.5.conv.1.0"  # a depthwise conv in the middle: its range widened 50 times
    observer = dict(prepared.named_modules())[damaged].activation_post_process
    observer.max_val *= 50
    report = sensitivity.sensitivity(prepared, images(16, 7).split(8), progress=False)
    assert sensitivity.most_sensitive(report, 1) == [damaged]
    assert "quant" in sensitivity.most_sensitive(report)  # the input stub is ranked, but cannot stay float
    assert "quant" not in sensitivity.most_sensitive(report, can_stay_float=True)
    by_name = {layer["name"]: layer for layer in report["layers"]}
    alone = {name: layer["only_quantized"]["sqnr_db"] for name, layer in by_name.items()}
    assert min(alone, key=lambda name: alone[name] if alone[name] is not None else math.inf) == damaged
    assert by_name[damaged]["only_float"]["sqnr_db"] > report["model"]["sqnr_db"] + 1.5  # float there: 3.3 -> 5.2 dB
    table = sensitivity.format_table(report, rows=3)
    assert table.splitlines()[4].startswith(f"| {damaged} | ConvReLU2d |") and len(table.splitlines()) == 7


def test_simulation_needs_a_calibrated_ptq_model():
    model = qzoo.mobilenet_v2(num_classes=10)
    with pytest.raises(RuntimeError, match=r"the int8 simulation \(qzoo.sensitivity, bias correction\) needs a "
                                           "prepared model: call qzoo.prepare_ptq"):
        sensitivity.sensitivity(model, [images(2, seed=1)])
    with pytest.raises(RuntimeError, match="run qzoo.calibrate"):
        simulation_layers(qzoo.prepare_ptq(model))


def test_cli_sensitivity_writes_json_and_a_chart(tmp_path, capsys):
    matplotlib = pytest.importorskip("matplotlib", reason="the chart is the optional qzoo[plot] extra")
    data = make_image_folder(tmp_path / "data")
    chart = tmp_path / "chart.png"
    matplotlib.use("svg")  # a caller's backend (a notebook's, say): drawing the chart must not switch it
    status = qzoo.cli.main(["sensitivity", "resnet18", "--data", str(data), "--image-size", "32", "--images", "6",
                            "--calib-images", "12", "--plot", str(chart), "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    report = json.loads(captured.out)
    assert report["images"] == 6 and report["calibration_images"] == 12 and len(report["layers"]) == 30
    assert {"output_sqnr_db", "only_quantized", "only_float"} <= set(report["layers"][0])
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.get_backend() == "svg"
    assert qzoo.cli.main(["sensitivity", "resnet18", "--data", str(data), "--image-size", "32", "--images", "6",
                          "--calib-images", "12"]) == 0
    printed = capsys.readouterr().out
    assert "| layer | type |" in printed and "all layers int8: output SQNR" in printed


def test_replay_survives_in_place_activations():
    """MobileNetV3's Hardswish(inplace=True) would overwrite recorded outputs; the report must equal full passes."""
    prepared = _calibrated(fresh_model("mobilenet_v3_small"))
    x = images(8, 6)
    report = sensitivity.sensitivity(prepared, [x], progress=False)
    assert any(getattr(m, "inplace", False) for m in prepared.modules())  # still in place after the report
    simulation = Int8Simulation(prepared)
    with torch.no_grad():
        floating = prepared(x)
        for layer in report["layers"][2:12:3]:
            with simulation.quantizing([layer["name"]]):
                alone = prepared(x)
            assert layer["only_quantized"]["sqnr_db"] == pytest.approx(_sqnr(floating, alone), abs=1e-3), layer["name"]


def test_target_mode_keeps_float_only_what_the_bound_needs():
    """The shipped CIFAR-10 MobileNetV2 with one depthwise layer's int8 range widened 500 times: the
    search keeps exactly that layer float, and its simulated top-1 is what the converted model scores."""
    loaded = workflow.load_model("mobilenet_v2.cifar10_float", progress=False)
    transforms = loaded.transforms
    split = {name: list(workflow.load_images(str(SAMPLE_ARCHIVE), name, transforms, loaded.categories,
                                             progress=False).batches(100, mean=transforms.mean, std=transforms.std))[:5]
             for name in ("train", "test")}
    prepared = qzoo.calibrate(qzoo.prepare_ptq(copy.deepcopy(loaded.model).eval()), split["train"], progress=False)
    damaged = "features.5.conv.1.0"
    dict(prepared.named_modules())[damaged].activation_post_process.max_val *= 500
    report = sensitivity.sensitivity(prepared, [split["test"][0][0][:64]], progress=False)
    target = sensitivity.fewest_float_layers(prepared, report, split["test"], max_drop=1.0, progress=False)
    tries = {entry["float_layers"]: entry["int8_top1"] for entry in target["tries"]}
    assert target["float_top1"] - tries[0] > 3.0  # the damage costs points
    assert target["met"] and target["float_layers"] == [damaged], target
    assert target["float_top1"] - target["int8_top1"] <= 1.0 and target["images"] == 500
    x = torch.cat([batch for batch, _ in split["test"]])
    labels = torch.cat([batch for _, batch in split["test"]])
    converted = 100.0 * float((run(qzoo.convert(copy.deepcopy(prepared)), x).argmax(1) == labels).float().mean())
    assert converted == pytest.approx(tries[0], abs=1.0)  # the simulation is what int8 computes


def test_target_search_doubles_then_halves_to_the_fewest_layers(monkeypatch):
    prepared = _calibrated(fresh_model("resnet18"))
    report = sensitivity.sensitivity(prepared, [images(4, 8)], progress=False)
    total = len(simulation_layers(prepared))

    def top1(model, simulation, quantized, batches):  # each float layer is worth 2 points, up to 5 of them;
        return 80.0 + 2 * min(total - len(quantized), 5) + (1.0 if not quantized else 0.0)  # float: 91 %

    monkeypatch.setattr(sensitivity, "_top1", top1)
    labelled = [(images(4, 9), torch.zeros(4, dtype=torch.long))]
    target = sensitivity.fewest_float_layers(prepared, report, labelled, max_drop=1.0, progress=False)
    assert target["float_layers"] == sensitivity.most_sensitive(report, 5, can_stay_float=True) and target["met"]
    assert [entry["float_layers"] for entry in target["tries"]] == [0, 1, 2, 4, 5, 6, 8]
    unreachable = sensitivity.fewest_float_layers(prepared, report, labelled, max_drop=-0.0, progress=False)
    assert not unreachable["met"] and len(unreachable["float_layers"]) == len(report["layers"]) - 1  # all but the stub
    with pytest.raises(ValueError, match="cannot be negative"):
        sensitivity.fewest_float_layers(prepared, report, labelled, max_drop=-1, progress=False)


def test_cli_sensitivity_target_mode(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data")
    args = ["sensitivity", "resnet18", "--data", str(data), "--image-size", "32", "--images", "6",
            "--calib-images", "12", "--validation-images", "18"]
    assert qzoo.cli.main([*args, "--max-drop", "100"]) == 0
    printed = capsys.readouterr().out
    assert "fewest float layers for a top-1 drop of at most 100 points (18 images): 0 (none)" in printed
    assert "meets the bound" in printed
    with pytest.raises(SystemExit):
        qzoo.cli.main([*args, "--max-drop", "-1"])
    assert "-1 is not a finite number >= 0" in capsys.readouterr().err
