"""The weights catalogue, its resolver, and the torchvision URL path: download, verify on every load, refuse bad files."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle

import pytest
import torch
from helpers import PicklePayload, images, quantized_copy, refreshed, run
from loopback import serving

import qzoo
import qzoo.cli
from qzoo import pretrained, registry
from qzoo.serialization import IntegrityError

ENTRY = "mobilenet_v2.imagenet1k_qnnpack_v1"
FILENAME = "mobilenet_v2_qnnpack_37f702c5.pth"  # torchvision's own file name


@pytest.fixture(scope="module")
def int8_reference():
    """A torchvision-format int8 checkpoint made here (1000 classes, qnnpack) and the model it came from."""
    model = quantized_copy(refreshed(qzoo.mobilenet_v2()), "qnnpack")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return model, buffer.getvalue()


@pytest.fixture
def point_entry_at(with_entries):
    def point(url: str, payload: bytes) -> pretrained.Weights:
        """The real entry, moved to the loopback server with the sha256 of the file the test made."""
        entry = dataclasses.replace(pretrained.get_weights(ENTRY), url=url, sha256=hashlib.sha256(payload).hexdigest())
        with_entries(entry)
        return entry

    return point


def test_quantize_true_downloads_verifies_and_loads_under_the_entry_backend(int8_reference, torch_home,
                                                                          point_entry_at, capfd):
    model, payload = int8_reference
    x = images(2, seed=3)
    stale = torch_home / f".{FILENAME}.99999999.partial"  # left by a killed download
    torch_home.mkdir(parents=True)
    stale.write_bytes(payload[:100])
    with serving() as server:
        server.files[FILENAME] = payload
        point_entry_at(f"{server.url}/{FILENAME}", payload)
        loaded = qzoo.mobilenet_v2(quantize=True)
        assert server.requests == [f"GET /{FILENAME}"]
    assert "%" in capfd.readouterr().err  # torch.hub's progress bar
    assert qzoo.model_backend(loaded) == "qnnpack" and qzoo.is_int8(loaded)
    assert torch.equal(run(loaded, x, "qnnpack"), run(model, x, "qnnpack"))
    assert sorted(p.name for p in torch_home.iterdir()) == [FILENAME]  # no partial files left
    again = qzoo.mobilenet_v2(quantize=True, backend="qnnpack", progress=False)  # server gone: cache hit
    assert torch.equal(run(again, x, "qnnpack"), run(model, x, "qnnpack"))


def test_a_cache_hit_is_rehashed_and_a_flipped_byte_refused(int8_reference, torch_home, point_entry_at):
    _, payload = int8_reference
    entry = point_entry_at(f"http://127.0.0.1:9/{FILENAME}", payload)
    torch_home.mkdir(parents=True)
    damaged = bytearray(payload)
    damaged[len(payload) // 2] ^= 0x01
    (torch_home / FILENAME).write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match=f"expected {entry.sha256}; delete .*{FILENAME} and load again"):
        qzoo.mobilenet_v2(quantize=True)


def test_the_real_entry_checks_torchvisions_published_hash_prefix(torch_home):
    torch_home.mkdir(parents=True)
    (torch_home / FILENAME).write_bytes(b"<html>502 Bad Gateway</html>")
    with pytest.raises(IntegrityError, match=r"expected 37f702c5\.\.\."):
        qzoo.mobilenet_v2(quantize=True)


def test_every_torchvision_file_name_yields_its_published_hash_prefix():
    """The prefix follows the last '-' or '_' before the extension, dots in the name included."""
    assert qzoo.get_weights("shufflenet_v2_x0_5.imagenet1k_v1").sha256 == "f707e7126e"
    assert qzoo.get_weights("resnet18.imagenet1k_fbgemm_v1").sha256 == "16fa66dd"
    for entry in qzoo.pretrained.catalogue().values():
        if entry.url is not None:
            assert entry.url.rsplit(".", 1)[0].endswith(entry.sha256), entry.name


def test_a_changed_file_from_the_server_never_reaches_the_cache(int8_reference, torch_home, point_entry_at):
    _, payload = int8_reference
    with serving() as server:
        server.files[FILENAME] = payload[:-1] + bytes([payload[-1] ^ 1])
        point_entry_at(f"{server.url}/{FILENAME}", payload)
        with pytest.raises(IntegrityError, match="the server sent a different file"):
            qzoo.mobilenet_v2(quantize=True, progress=False)
    assert not torch_home.exists() or list(torch_home.iterdir()) == []


def test_a_malicious_pickle_with_a_matching_hash_never_runs(torch_home, tmp_path, point_entry_at, monkeypatch):
    sentinel = tmp_path / "pwned"
    monkeypatch.setenv("QZOO_SENTINEL", str(sentinel))
    payload = pickle.dumps({"features.0.0.weight": PicklePayload()})
    with serving() as server:
        server.files[FILENAME] = payload
        point_entry_at(f"{server.url}/{FILENAME}", payload)
        with pytest.raises(pickle.UnpicklingError):
            qzoo.mobilenet_v2(quantize=True, progress=False)
    assert not sentinel.exists()


@pytest.mark.parametrize(("call", "message"), [
    (lambda: qzoo.mobilenet_v2(quantize=True, backend="x86"), "backend qnnpack only; pass backend='qnnpack'"),
    (lambda: qzoo.resnet34(quantize=True), "no pretrained int8 weights; make them: .*prepare='ptq'"),
    (lambda: qzoo.resnet18(quantize=True, weights="resnet50.imagenet1k_fbgemm_v1"), "int8 weights of resnet50"),
    (lambda: qzoo.resnet18(quantize=True, weights="IMAGENET1K_V1"), "float weights of resnet18.*prepare='ptq'"),
    (lambda: qzoo.mobilenet_v2(quantize=True, weights="DEFAULT", num_classes=10), "1000 classes but num_classes=10"),
    (lambda: qzoo.get_weights("resnet18.cifar100"), "entries for 'resnet18': .*resnet18.imagenet1k_fbgemm_v1"),
    (lambda: qzoo.get_weights("resnet81"), "unknown model or weights 'resnet81'; did you mean resnet18"),
    (lambda: qzoo.list_weights("resnet81"), "unknown model 'resnet81'; did you mean resnet18"),  # not "no weights"
    (lambda: qzoo.list_weights(mode="fp16"), "mode='fp16': choose 'float' or 'int8'"),
    (lambda: qzoo.from_pretrained("resnet18.imagenet1k_v1", revision="v2"),
     "revision='v2' picks a version of a hub repository, but resnet18.imagenet1k_v1 is a file entry pinned"),
    (lambda: qzoo.from_pretrained("mobilenet_v2.cifar10_int8_ptq", revision="v2"),
     "but mobilenet_v2.cifar10_int8_ptq is an entry read from the weights/ folder of qzoo's repository: omit"),
    (lambda: qzoo.from_pretrained(pretrained.REPOSITORY_WEIGHTS / "resnet18.cifar10_int8_ptq", revision="main"),
     "but .*resnet18.cifar10_int8_ptq is a local folder: omit revision"),
    (lambda: qzoo.resnet50(quantize=True, weights="IMAGENET1K_FBGEMM_V1", backend="qnnpack"),
     "quantized for backend 'fbgemm'.*pass backend='fbgemm'"),
])
def test_int8_weights_requests_that_cannot_work_name_the_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_entries_mirror_torchvisions_enums():
    from torchvision.models.quantization import MobileNet_V2_QuantizedWeights, ResNet50_QuantizedWeights

    entry = pretrained.get_weights(ENTRY)
    tv = MobileNet_V2_QuantizedWeights.IMAGENET1K_QNNPACK_V1
    assert (entry.url, entry.sha256, entry.backend, entry.default) == (tv.url, "37f702c5", "qnnpack", True)
    assert entry.metrics["ImageNet-1K"] == {"acc1": 71.658, "acc5": 90.15}
    assert entry.unquantized == "mobilenet_v2.imagenet1k_v1"
    resnet50 = pretrained.resolve_int8(registry.model_spec("resnet50"), None, None)
    assert resnet50.url == ResNet50_QuantizedWeights.DEFAULT.url and resnet50.sha256 == "23753f79"
    torchvision_entries = [n for n in pretrained.list_weights("resnet18") if pretrained.get_weights(n).url]
    assert torchvision_entries == ["resnet18.imagenet1k_fbgemm_v1", "resnet18.imagenet1k_v1"]


def test_from_pretrained_builds_torchvision_entries_by_name(int8_reference, torch_home, point_entry_at):
    model, payload = int8_reference
    with serving() as server:
        server.files[FILENAME] = payload
        point_entry_at(f"{server.url}/{FILENAME}", payload)
        loaded = qzoo.from_pretrained(ENTRY, progress=False)
    x = images(2, seed=8)
    assert torch.equal(run(loaded, x, "qnnpack"), run(model, x, "qnnpack"))


def test_the_cli_takes_a_checkpoint_entry_as_its_source(int8_reference, torch_home, point_entry_at, tmp_path, capsys):
    from PIL import Image

    from qzoo.data import decode_image

    model, payload = int8_reference
    photo = tmp_path / "photo.png"
    Image.fromarray(torch.randint(0, 256, (240, 300, 3), generator=torch.Generator().manual_seed(5),
                                  dtype=torch.uint8).numpy()).save(photo)
    with serving() as server:
        server.files[FILENAME] = payload
        entry = point_entry_at(f"{server.url}/{FILENAME}", payload)
        assert qzoo.cli.main(["predict", str(photo), "--model", ENTRY, "--top", "3", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    t = entry.transforms
    pixels = decode_image(photo, t.crop_size, t.resize_size, t.interpolation).float() / 255
    x = ((pixels - torch.tensor(t.mean).view(3, 1, 1)) / torch.tensor(t.std).view(3, 1, 1)).unsqueeze(0)
    probabilities = run(model, x, "qnnpack")[0].softmax(0)
    expected = probabilities.argsort(descending=True, stable=True)[:3].tolist()
    assert [row["index"] for row in result["top"]] == expected
    assert [row["label"] for row in result["top"]] == [entry.categories[i] for i in expected]
    assert [row["probability"] for row in result["top"]] == pytest.approx(probabilities[expected].tolist(), abs=1e-6)
    assert qzoo.cli.main(["bench", ENTRY, "--repeats", "2", "--image-size", "64", "--json"]) == 0  # cached now
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == ENTRY and report["backend"] == "qnnpack"
    assert 0 < report["int8_file_bytes"] < 0.3 * report["float_file_bytes"]
