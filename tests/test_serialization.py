"""The int8 safetensors format: bit-exact round trips, size, no pickle, damaged files refused."""

from __future__ import annotations

import pickle

import pytest
import safetensors.torch
import torch
from helpers import HEAVY, NUM_CLASSES, arguments, fresh_model, images, input_size, quantized_copy, refreshed, run

import qzoo
from qzoo import serialization
from qzoo.serialization import IntegrityError


def int8_model(name: str, backend: str) -> torch.nn.Module:
    return quantized_copy(refreshed(qzoo.get_model(name, num_classes=NUM_CLASSES)), backend,
                          calibration=images(4, seed=2))


def save(model: torch.nn.Module, path, name: str, backend: str):
    return serialization.save_int8(model, path, architecture=name, kwargs=arguments(name), backend=backend)


def load(path, name: str, backend: str) -> torch.nn.Module:
    _, state = serialization.read_int8(path)
    skeleton = qzoo.int8_skeleton(qzoo.get_model(name, **arguments(name)), backend)
    return serialization.load_int8_state(skeleton, state, str(path))


@pytest.mark.parametrize("name", HEAVY)
def test_every_family_round_trips_bit_exactly_at_under_0_32x_the_float_file(name, tmp_path):
    """Depthwise layers carry a float64 scale (bit-exact) per 9 int8 weights: shufflenet_v2_x0_5 at
    10 classes measures 0.309 (2026-11-29); weight-dominated models stay near 0.26."""
    float_model = fresh_model(name)
    # a safetensors file is its tensors' bytes plus a small JSON header
    float_bytes = sum(t.numel() * t.element_size() for t in float_model.state_dict().values())
    size = input_size(name)
    x = images(4, seed=7, size=size)
    for backend in ("x86", "qnnpack"):
        model = quantized_copy(float_model, backend, calibration=images(4, seed=2, size=size))
        path = save(model, tmp_path / f"{backend}.safetensors", name, backend)
        assert torch.equal(run(load(path, name, backend), x, backend), run(model, x, backend))
        assert path.stat().st_size <= 0.32 * float_bytes


@pytest.mark.parametrize("backend", ["fbgemm", "onednn"])
def test_the_other_backends_round_trip_bit_exactly(backend, tmp_path):
    model = int8_model("resnet18", backend)
    path = save(model, tmp_path / "m.safetensors", "resnet18", backend)
    x = images(4, seed=7)
    assert torch.equal(run(load(path, "resnet18", backend), x, backend), run(model, x, backend))


def test_torchvision_per_tensor_weights_round_trip(tmp_path):
    per_tensor = torch.ao.quantization.get_default_qconfig("qnnpack")
    model = quantized_copy(refreshed(qzoo.mobilenet_v2(num_classes=NUM_CLASSES)), "qnnpack", qconfig=per_tensor)
    path = save(model, tmp_path / "m.safetensors", "mobilenet_v2", "qnnpack")
    x = images(4, seed=7)
    assert torch.equal(run(load(path, "mobilenet_v2", "qnnpack"), x, "qnnpack"), run(model, x, "qnnpack"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / "resnet18.safetensors"
    return save(int8_model("resnet18", "x86"), path, "resnet18", "x86")


def test_loading_never_unpickles(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the int8 loader unpickled something")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert qzoo.is_int8(load(saved, "resnet18", "x86"))


def test_a_file_of_another_architecture_is_refused(saved):
    _, state = serialization.read_int8(saved)
    with pytest.raises(ValueError, match="does not fit this model"):
        serialization.load_int8_state(qzoo.int8_skeleton(qzoo.resnet34(num_classes=NUM_CLASSES)), state, "f")
    with pytest.raises(ValueError, match=r"shape \(10, 512\), the model expects \(7, 512\)"):
        bigger = qzoo.int8_skeleton(qzoo.resnet18(num_classes=7))
        serialization.load_int8_state(bigger, state, "f")


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5, -1])
def test_a_truncated_file_is_an_integrity_error(saved, tmp_path, keep):
    data = saved.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(IntegrityError):
        serialization.read_int8(cut)


def test_every_changed_byte_is_caught(saved, tmp_path):
    data = saved.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    generator = torch.Generator().manual_seed(0)
    positions = [10, 50, header_end - 3, header_end, header_end + 1, len(data) - 1]
    positions += torch.randint(header_end, len(data), (40,), generator=generator).tolist()
    for position in positions:
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        path = tmp_path / "damaged.safetensors"
        path.write_bytes(bytes(damaged))
        with pytest.raises((IntegrityError, ValueError)):
            serialization.read_int8(path)


def test_a_float_file_or_a_foreign_safetensors_file_is_not_int8(tmp_path):
    float_file = serialization.save_state(qzoo.resnet18(num_classes=NUM_CLASSES), tmp_path / "f.safetensors")
    with pytest.raises(ValueError, match="not qzoo int8"):
        serialization.read_int8(float_file)
    foreign = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="without a qzoo header"):
        serialization.read_int8(foreign)


def test_float_and_qat_states_round_trip_and_check_shapes(tmp_path):
    x = images(4, seed=3)
    model = refreshed(qzoo.resnet18(num_classes=NUM_CLASSES))
    qat = qzoo.resnet18(prepare="qat", num_classes=NUM_CLASSES)
    with torch.no_grad():
        qat(x)
    for source, fresh in ((model, qzoo.resnet18(num_classes=NUM_CLASSES)),
                          (qat, qzoo.resnet18(prepare="qat", num_classes=NUM_CLASSES))):
        path = serialization.save_state(source, tmp_path / "s.safetensors")
        serialization.load_state(fresh, path)
        source.eval(), fresh.eval()
        with torch.no_grad():
            assert torch.equal(fresh(x), source(x))
    with pytest.raises(ValueError, match="QAT-prepared state but the model is float: build it with prepare='qat'"):
        serialization.load_state(qzoo.resnet18(num_classes=NUM_CLASSES), tmp_path / "s.safetensors")
    serialization.save_state(model, tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match=r"fc.(weight|bias) has shape \(10.*expects \(7.*num_classes"):
        serialization.load_state(qzoo.resnet18(num_classes=7), tmp_path / "s.safetensors")
