"""The loaders fuzzed with hypothesis: damaged, forged (re-signed) and edited int8 folders are refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers import assert_varies, images, quantized_copy, refreshed, run
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import qzoo
from qzoo import serialization
from qzoo._files import file_sha256

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


def test_a_huge_file_with_a_matching_hash_is_refused_before_it_is_read(small_folder, tmp_path):
    """A 1 GiB (sparse) weights file whose sha256 config.json confirms: refused from its header,
    with the process's peak memory almost unchanged (reading it would cost twice its size)."""
    folder = write_folder(small_folder, tmp_path / "huge", b"", json.loads((small_folder / "config.json").read_text()))
    header = {"__metadata__": {"qzoo": _metadata((small_folder / "model.safetensors").read_bytes())},
              "filler": {"dtype": "F32", "shape": [2 ** 28], "data_offsets": [0, 2 ** 30]}}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    weights = folder / "model.safetensors"
    with weights.open("wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little") + encoded)
        handle.truncate(8 + len(encoded) + 2 ** 30)
    config = json.loads((folder / "config.json").read_text())
    config["sha256"] = file_sha256(weights)
    (folder / "config.json").write_text(json.dumps(config))
    script = f"""
import resource, qzoo
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    qzoo.from_pretrained({str(folder)!r})
except ValueError as error:
    print(error)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    message, grown_mib = result.stdout.strip().rsplit("\n", 1)
    assert "holds 268,435,456 values" in message and "is not read" in message
    assert int(grown_mib) < 64, f"peak memory grew {grown_mib} MiB"
