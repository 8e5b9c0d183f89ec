"""Trust: int8 models that refuse silent misuse, deterministic int8 inference, downloads that
survive kills and races, loaders that survive damaged and forged files (hypothesis fuzzing)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers import NUM_CLASSES, PicklePayload, assert_varies, images, quantized_copy, refreshed, run
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from loopback import serving

import qzoo
from qzoo import serialization, train, weights
from qzoo.requirements import MINIMUM_TORCH, check_torch_version
from qzoo.serialization import IntegrityError

# ----------------------------------------------------------------------------- int8 stays float32 CPU


@pytest.fixture(scope="module")
def resnet_int8():
    return quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)))


@pytest.mark.parametrize("move", [
    lambda m: m.half(), lambda m: m.double(), lambda m: m.bfloat16(), lambda m: m.to(torch.float16),
    lambda m: m.to(dtype=torch.float64), lambda m: m.cuda(), lambda m: m.to("meta"),
], ids=["half", "double", "bfloat16", "to-float16", "to-float64", "cuda", "to-meta"])
def test_an_int8_model_refuses_to_change_dtype_or_device(resnet_int8, move):
    x = images(2, seed=1)
    before = run(resnet_int8, x)
    with pytest.raises(TypeError, match="int8 model: it runs on the CPU .* float32 CPU images after the "
                                        "model's preprocessing transform"):
        move(resnet_int8)
    assert torch.equal(run(resnet_int8, x), before)  # refused before anything changed


def test_an_int8_model_accepts_moves_that_keep_it_float32_cpu(resnet_int8):
    x = images(2, seed=1)
    before = run(resnet_int8, x)
    for keep in (lambda m: m.float(), lambda m: m.cpu(), lambda m: m.to("cpu"), lambda m: m.to(torch.float32)):
        assert keep(resnet_int8) is resnet_int8
    assert torch.equal(run(resnet_int8, x), before)
    assert qzoo.resnet18(num_classes=NUM_CLASSES).half().fc.weight.dtype == torch.float16  # float models move


# ----------------------------------------------------------------------------- determinism


@contextlib.contextmanager
def num_threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def concurrently(model: torch.nn.Module, x: torch.Tensor, threads: int) -> list[torch.Tensor]:
    def call(_):
        with torch.inference_mode():
            return model(x)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(call, range(3 * threads)))


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_int8_outputs_are_bit_identical_across_runs_batching_threads_and_layouts(name, backend):
    torch.manual_seed(0)
    model = quantized_copy(refreshed(qzoo.get_model(name, num_classes=NUM_CLASSES)), backend)
    x = images(8, seed=11)
    reference = run(model, x, backend)
    assert_varies(reference)
    with torch.inference_mode():
        outputs = {
            "again": model(x),
            "8 batches of 1": torch.cat([model(x[i:i + 1]) for i in range(8)]),
            "channels_last input": model(x.contiguous(memory_format=torch.channels_last)),
        }
        for count in (1, 2, 4):
            with num_threads(count):
                outputs[f"{count} torch threads"] = model(x)
    for count in (2, 8):
        for index, output in enumerate(concurrently(model, x, count)):
            outputs[f"{count} Python threads, call {index}"] = output
    differing = [label for label, output in outputs.items() if not torch.equal(output, reference)]
    assert not differing


def test_models_of_two_backends_called_from_many_threads_keep_their_own_results():
    """The quantized engine is process-global; an x86 model run while another thread holds
    qnnpack gives other logits (checked below), so qzoo never lets the two overlap."""
    torch.manual_seed(0)
    float_model = refreshed(qzoo.resnet18(num_classes=NUM_CLASSES))
    x86, qnnpack = quantized_copy(float_model, "x86"), quantized_copy(float_model, "qnnpack")
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # where the engines round apart
    expected = {"x86": run(x86, x, "x86"), "qnnpack": run(qnnpack, x, "qnnpack")}
    with torch.inference_mode(), qzoo.quantized_engine("qnnpack"):
        assert not torch.equal(torch.nn.Module.__call__(x86, x), expected["x86"])  # what the gate prevents

    def call(index: int) -> bool:
        backend, model = ("x86", x86) if index % 2 else ("qnnpack", qnnpack)
        with torch.inference_mode():
            return torch.equal(model(x), expected[backend])

    engine = torch.backends.quantized.engine
    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(call, range(48)))
    assert torch.backends.quantized.engine == engine


# ----------------------------------------------------------------------------- downloads

ENTRY = "mobilenet_v2.imagenet1k_qnnpack_v1"
FILENAME = "mobilenet_v2_qnnpack_37f702c5.pth"
PAYLOAD = os.urandom(1_500_000)
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()

# A child process that fetches the real entry moved to the loopback server, after a start signal.
FETCH = """
import dataclasses, pathlib, sys, time
from qzoo import weights
url, sha256, ready, go = sys.argv[1:]
entry = dataclasses.replace(weights.ENTRIES[{entry!r}], url=url, sha256=sha256)
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.01)
print(weights.file_sha256(weights.fetch_url(entry, progress=False)))
""".format(entry=ENTRY)


def start_fetch(url: str, tmp_path: Path, index: int) -> tuple[subprocess.Popen, Path]:
    ready = tmp_path / f"ready-{index}"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    process = subprocess.Popen([sys.executable, "-c", FETCH, url, SHA256, str(ready), str(tmp_path / "go")],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, ready


def wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_four_processes_downloading_at_once_all_end_with_the_verified_file(tmp_path):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    with serving() as server:
        server.files[FILENAME] = PAYLOAD
        server.throttle(0.03)  # about 0.7 s per download, so the four overlap
        started = [start_fetch(f"{server.url}/{FILENAME}", tmp_path, i) for i in range(4)]
        wait_for(lambda: all(ready.exists() for _, ready in started), "the four processes to start")
        (tmp_path / "go").touch()
        results = [process.communicate(timeout=300) for process, _ in started]
        downloads = [r for r in server.requests if r.startswith("GET")]
    assert [process.returncode for process, _ in started] == [0] * 4, [err[-500:] for _, err in results]
    assert [out.strip() for out, _ in results] == [SHA256] * 4
    assert len(downloads) >= 2, f"the downloads did not overlap: {server.requests}"
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME]  # no partial file left by anyone
    assert weights.file_sha256(cache / FILENAME) == SHA256


def test_a_download_killed_half_way_leaves_nothing_a_later_load_accepts(tmp_path, monkeypatch):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    with serving() as server:
        server.files[FILENAME] = PAYLOAD
        server.throttle(0.5)  # about 12 s per download: killed long before the end
        process, ready = start_fetch(f"{server.url}/{FILENAME}", tmp_path, 0)
        wait_for(ready.exists, "the process to start")
        (tmp_path / "go").touch()
        wait_for(lambda: cache.is_dir() and any(p.stat().st_size > 0 for p in cache.iterdir()), "a partial file")
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        left = sorted(p.name for p in cache.iterdir())
        assert FILENAME not in left and left and all(name.endswith(".partial") for name in left)

        server.throttle(0)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        entry = dataclasses.replace(weights.ENTRIES[ENTRY], url=f"{server.url}/{FILENAME}", sha256=SHA256)
        path = weights.fetch_url(entry, progress=False)
    assert weights.file_sha256(path) == SHA256
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME]  # the dead process's partials are gone


@pytest.mark.parametrize(("content", "kind"), [
    (b"", "empty"),
    (PAYLOAD[:1000], "truncated"),
    (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML error page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + SHA256.encode() + b"\nsize 1500000\n",
     "Git LFS pointer"),
])
def test_a_bad_cached_file_names_both_hashes_and_how_to_download_again(tmp_path, monkeypatch, content, kind):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / FILENAME).write_bytes(content)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    entry = dataclasses.replace(weights.ENTRIES[ENTRY], url=f"http://127.0.0.1:9/{FILENAME}", sha256=SHA256)
    actual = hashlib.sha256(content).hexdigest()
    with pytest.raises(IntegrityError, match=f"sha256 {actual}, expected {SHA256}; delete .*{FILENAME} "
                                             "and load again to re-download it"):
        weights.fetch_url(entry, progress=False)


def test_a_malicious_optimizer_file_in_a_checkpoint_never_runs(tmp_path, monkeypatch):
    sentinel = tmp_path / "pwned"
    monkeypatch.setenv("QZOO_SENTINEL", str(sentinel))
    model = qzoo.resnet18(num_classes=NUM_CLASSES)
    recipe = train.Recipe(epochs=1, lr=0.01, batch_size=4)
    batch = (images(4, seed=0), torch.arange(4))
    train.fit(model, lambda epoch: [batch], recipe, tmp_path / "run", progress=False)
    torch.save({"state": PicklePayload()}, tmp_path / "run" / "checkpoint" / "optimizer.pt")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(Exception, match="Weights only load failed"):
        train.load_checkpoint(tmp_path / "run", model, optimizer)
    assert not sentinel.exists()


# ----------------------------------------------------------------------------- fuzzing the loaders

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SMALL = {"num_classes": 3, "width_mult": 0.25}
FUZZ_IMAGES = images(4, seed=3)


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """A saved int8 folder of a small MobileNetV2 (about 0.3 MB), the subject of every fuzz case."""
    torch.manual_seed(0)
    model = quantized_copy(refreshed(qzoo.mobilenet_v2(**SMALL)))
    folder = tmp_path_factory.mktemp("fuzz") / "model"
    qzoo.save_pretrained(model, folder)
    return folder


@pytest.fixture(scope="module")
def small_outputs(small_folder):
    return run(qzoo.from_pretrained(small_folder), FUZZ_IMAGES)


def write_folder(source: Path, target: Path, weights_bytes: bytes, config: dict) -> Path:
    target.mkdir(exist_ok=True)
    (target / "model.safetensors").write_bytes(weights_bytes)
    (target / "config.json").write_text(json.dumps(config))
    (target / "README.md").write_bytes((source / "README.md").read_bytes())
    return target


def forged_file(source: Path, edit) -> bytes:
    """The int8 file with ``edit(header, tensors)`` applied and its content digest recomputed: a
    file that passes every hash, as a buggy or hostile writer could make one."""
    header = serialization.read_header(source)
    tensors = safetensors.torch.load_file(str(source))
    header.pop("content_sha256")
    edit(header, tensors)
    header["content_sha256"] = serialization._content_digest(header, tensors)
    return safetensors.torch.save(tensors, metadata={"qzoo": json.dumps(header)})


def refuses(folder: Path) -> None:
    with pytest.raises(ValueError):  # IntegrityError included: never another error, never a model
        qzoo.from_pretrained(folder)


@FUZZ
@given(data=st.data())
def test_damaged_int8_files_are_refused(small_folder, tmp_path, data):
    original = (small_folder / "model.safetensors").read_bytes()
    damage = data.draw(st.sampled_from(["truncate", "flip", "insert"]))
    at = data.draw(st.integers(0, len(original) - 1))
    if damage == "truncate":
        damaged = original[:at]
    elif damage == "flip":
        damaged = original[:at] + bytes([original[at] ^ data.draw(st.integers(1, 255))]) + original[at + 1:]
    else:
        damaged = original[:at] + data.draw(st.binary(min_size=1, max_size=16)) + original[at:]
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(damaged)
    with pytest.raises(ValueError):
        serialization.read_int8(path)
    config = json.loads((small_folder / "config.json").read_text())
    # with config.json re-pointed at the damaged file, only the file's own checks stand in the way
    refuses(write_folder(small_folder, tmp_path / "folder", damaged,
                         {**config, "sha256": hashlib.sha256(damaged).hexdigest()}))


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=6)


def header_edit(data):
    """One hostile change to an int8 header or its tensors (the file is re-signed afterwards)."""
    choice = data.draw(st.sampled_from(["entry field", "drop entry", "kwargs", "scale", "zero point", "tensor"]))

    def edit(header, tensors):
        entries = header["entries"]
        if choice == "entry field":
            key = data.draw(st.sampled_from(sorted(entries)))
            field = data.draw(st.sampled_from(["kind", "dtype", "qscheme", "axis", "value", "bias", "weight"]))
            entries[key][field] = data.draw(JSON_VALUES.filter(lambda v: v != entries[key].get(field)))
        elif choice == "drop entry":
            del entries[data.draw(st.sampled_from(sorted(entries)))]
        elif choice == "kwargs":
            key = data.draw(st.sampled_from(["num_classes", "width_mult", "weights", "unknown"]))
            value = data.draw(st.integers(-5, 10**12) | st.floats() | JSON_VALUES)
            header["kwargs"] = {**SMALL, key: value}
        elif choice in ("scale", "zero point"):
            suffix, bad = {"scale": (":scale", [float("nan"), float("inf"), 0.0, -1.0]),
                           "zero point": (":zero_point", [10**6, -(10**6)])}[choice]
            key = data.draw(st.sampled_from(sorted(k for k in tensors if k.endswith(suffix))))
            values = tensors[key].to(torch.float64 if choice == "scale" else torch.int64).clone()
            values.view(-1)[data.draw(st.integers(0, values.numel() - 1))] = data.draw(st.sampled_from(bad))
            tensors[key] = values
        else:  # another shape or dtype for a stored tensor
            key = data.draw(st.sampled_from(sorted(tensors)))
            values = tensors[key]
            tensors[key] = data.draw(st.sampled_from([values.flatten()[1:], values.to(torch.float16),
                                                      torch.zeros(2, 2, 2, dtype=values.dtype)])).contiguous()

    return edit


@FUZZ
@given(data=st.data())
def test_forged_int8_files_that_pass_every_hash_are_refused_or_rebuilt_exactly(small_folder, small_outputs,
                                                                               tmp_path, data):
    forged = forged_file(small_folder / "model.safetensors", header_edit(data))
    header = json.loads(_metadata(forged))
    config = json.loads((small_folder / "config.json").read_text())
    config.update(architecture=header.get("architecture"), kwargs=header.get("kwargs"),
                  sha256=hashlib.sha256(forged).hexdigest())
    folder = write_folder(small_folder, tmp_path / "folder", forged, config)
    try:
        model = qzoo.from_pretrained(folder)
    except ValueError:  # IntegrityError included
        return
    # an edit that changes nothing that matters (a width_mult that rounds to the same channels)
    assert torch.equal(run(model, FUZZ_IMAGES), small_outputs)


def _metadata(file_bytes: bytes) -> str:
    length = int.from_bytes(file_bytes[:8], "little")
    return json.loads(file_bytes[8:8 + length])["__metadata__"]["qzoo"]


@FUZZ
@given(field=st.sampled_from(["architecture", "kwargs", "mode", "backend", "sha256", "library"]),
       value=JSON_VALUES)
def test_edited_config_files_are_refused(small_folder, tmp_path, field, value):
    config = json.loads((small_folder / "config.json").read_text())
    assume(config.get(field) != value)
    config[field] = value
    refuses(write_folder(small_folder, tmp_path / "folder", (small_folder / "model.safetensors").read_bytes(),
                         config))


def test_the_fuzz_subject_itself_loads_and_varies(small_folder, small_outputs):
    loaded = qzoo.from_pretrained(small_folder)
    assert qzoo.is_int8(loaded) and torch.equal(run(loaded, FUZZ_IMAGES), small_outputs)
    assert_varies(small_outputs)


# ----------------------------------------------------------------------------- requirements


@pytest.mark.parametrize(("version", "accepted"), [
    ("2.9.1", False), ("2.10.0a0", False), ("2.10.0", True), ("2.14.1+cu128", True),
])
def test_torch_older_than_2_10_is_refused_at_import(version, accepted):
    if accepted:
        check_torch_version(version)
    else:
        with pytest.raises(ImportError, match=f"needs torch>=2.10, found torch {re.escape(version)}: .*weights_only"):
            check_torch_version(version)


def test_the_package_metadata_pins_the_same_torch_range():
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "torch>=2.10,<2.15" in project["dependencies"] and MINIMUM_TORCH == (2, 10)
    assert "torchvision>=0.25,<0.30" in project["dependencies"]
