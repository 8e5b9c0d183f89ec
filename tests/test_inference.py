"""qzoo's optimized int8 path and the benchmark harness (no timings are asserted: the machine is shared)."""

from __future__ import annotations

import copy
import importlib.util
import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from helpers import NUM_CLASSES, assert_varies, images, quantized_copy, refreshed, run

import qzoo

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_the_optimized_graph_is_bit_identical_to_the_eager_int8_model(name, backend):
    eager = quantized_copy(refreshed(qzoo.get_model(name, num_classes=NUM_CLASSES)), backend)
    optimized = qzoo.optimize_for_inference(eager, images(2, seed=0))
    assert isinstance(optimized, qzoo.OptimizedModel) and optimized.backend == backend
    for x in (images(1, seed=1), images(5, seed=2), images(3, seed=3).contiguous(memory_format=torch.channels_last)):
        expected = run(eager, x, backend)
        with torch.inference_mode():  # under the default engine: the graph takes its own backend's
            assert torch.equal(optimized(x), expected)
    assert_varies(run(eager, images(5, seed=2), backend))


def test_qzoos_own_calls_raise_no_warning_on_this_torch(tmp_path):
    """torch deprecates TorchScript, eager quantization and quantized dtypes with warnings that differ by
    release (2.10: DeprecationWarning from torch.jit; 2.15: others); none reaches a user of qzoo's own
    calls: PTQ, QAT conversion, both fast paths, ONNX export, saving and loading (both CI legs run this)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        int8 = qzoo.quantize(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)), images(8, seed=1).split(4),
                             progress=False)
        for runtime in ("torch", "onnxruntime"):
            run(qzoo.optimize_for_inference(int8, images(2, seed=3), runtime=runtime), images(2, seed=4))
        qzoo.export_onnx(int8, tmp_path / "model.onnx")
        run(qzoo.from_pretrained(qzoo.save_pretrained(int8, tmp_path / "saved")), images(2, seed=4))
        qat = qzoo.prepare_qat(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)))
        qat(images(4, seed=5))
        qzoo.convert(qat.eval())
    assert [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught] == []


def test_optimize_for_inference_takes_int8_models_and_float32_images_only():
    with pytest.raises(ValueError, match="takes an int8 model: run qzoo.prepare_ptq, qzoo.calibrate and qzoo.convert"):
        qzoo.optimize_for_inference(qzoo.resnet18(num_classes=NUM_CLASSES))
    optimized = qzoo.optimize_for_inference(quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES))),
                                            images(2, seed=0))
    with pytest.raises(TypeError, match="float32 CPU images"):
        optimized(images(1, seed=0).half())
    with pytest.raises(TypeError, match=r"not pickled: write it with `qzoo export` .* qzoo.quantized_engine\('x86'\)"):
        pickle.dumps(optimized)
    x = images(2, seed=1)
    assert torch.equal(copy.deepcopy(optimized)(x), optimized(x))


def test_a_call_of_another_backend_inside_a_running_one_is_refused_not_deadlocked():
    with qzoo.backend_engine("x86"):
        with qzoo.backend_engine("x86"):
            pass
        with pytest.raises(RuntimeError, match="qnnpack int8 call inside a running x86 one"):
            with qzoo.backend_engine("qnnpack"):
                pass
    with qzoo.backend_engine("qnnpack"):
        assert torch.backends.quantized.engine == "qnnpack"


def test_the_benchmark_harness_runs_every_variant_on_a_tiny_model(tmp_path):
    command = [sys.executable, str(ROOT / "tools" / "bench.py"), "--models", "mobilenet_v2", "--batches", "1", "2",
               "--threads", "1", "--repeats", "2", "--image-size", "32", "--no-workflow-cost", "--no-docs",
               "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    runs = report["models"]["mobilenet_v2"]["runs"]
    assert [(r["threads"], r["batch"]) for r in runs] == [(1, 1), (1, 2)]
    expected = {"torch fp32", "torch int8 x86", "torch int8 qnnpack", "qzoo optimized int8", "torchvision int8"}
    if importlib.util.find_spec("onnxruntime"):
        expected |= {"ORT fp32", "ORT int8 QDQ", "qzoo int8 on ORT"}
    for run_ in runs:
        assert set(run_["timings"]) == expected
        assert all(t["median_ms"] > 0 and t["min_ms"] <= t["median_ms"] and t["rounds"] >= 2
                   for t in run_["timings"].values())
        assert run_["gops_per_call"] > 0
    sizes = report["models"]["mobilenet_v2"]["sizes_bytes"]
    assert sizes["int8"] < 0.3 * sizes["fp32"]
    assert report["gemm_ceiling"]["1"]["int8_gops"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert "| mobilenet_v2 | 2 |" in table and "qzoo optimized / ORT int8 | qzoo on ORT / ORT int8" in table


def test_interleaved_timings_give_every_runner_every_place_in_the_order():
    """Round r starts with runner r mod n: over 3k rounds each of n=3 runners runs first, second and third
    k times each, so a place that runs faster (warm threads, caches) favours none of them."""
    from qzoo.benchmark import interleaved_timings

    calls: list[str] = []
    runners = {name: (lambda _x, name=name: calls.append(name)) for name in "abc"}
    timings = interleaved_timings(runners, torch.zeros(1), repeats=6, warmup=0, window_s=0.0,
                                  quiet_share=float("inf"))  # every window kept, however busy the machine
    assert all(timing.rounds == 6 and timing.kept == 6 for timing in timings.values())
    rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 6 and all(sorted(order) == ["a", "b", "c"] for order in rounds)
    for place in range(3):
        assert sorted(order[place] for order in rounds) == ["a", "a", "b", "b", "c", "c"]


def test_each_benchmark_cell_times_fresh_int8_copies_that_keep_the_models_logits():
    """tools/bench.py times every cell on copies first called at its batch (torch's x86 engine keeps the fast path of
    a packed weight's first call): copies, not the models themselves, and with their logits (qnnpack included)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        spec = importlib.util.spec_from_file_location("bench", ROOT / "tools" / "bench.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(ROOT / "tools"))
    int8 = {backend: quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)), backend)
            for backend in ("x86", "qnnpack")}
    x = images(2, seed=1)
    runners = bench.first_called_copies(int8, None, x)
    for backend, model in int8.items():
        assert runners[f"torch int8 {backend}"] is not model
        assert torch.equal(run(runners[f"torch int8 {backend}"], x, backend), run(model, x, backend))
    assert torch.equal(run(runners[bench.QZOO_TORCH], x), run(int8["x86"], x))
