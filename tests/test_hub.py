"""save_pretrained / from_pretrained / the hub download path, against a loopback hub server."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from helpers import NUM_CLASSES, images, quantized_copy, refreshed, run
from loopback import serving

import qzoo
from qzoo import pretrained
from qzoo._files import file_sha256
from qzoo.serialization import IntegrityError

REPO = "qzoo-test/resnet18-int8"


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory) -> Path:
    model = quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)), "x86")
    return qzoo.save_pretrained(model, tmp_path_factory.mktemp("folder"), metrics={"synthetic": {"acc1": 0.0}})


def publish(server, folder: Path, repo: str = REPO) -> None:
    for name in ("config.json", "model.safetensors", "README.md"):
        server.files[f"{repo}/{name}"] = (folder / name).read_bytes()


ROUND_TRIPS = [(name, mode, backend) for name in ("resnet18", "resnet50", "mobilenet_v2")
               for mode in ("float", "qat", "int8") for backend in ("x86", "qnnpack")
               if mode != "float" or backend == "x86"]


@pytest.mark.parametrize(("name", "mode", "backend"), ROUND_TRIPS)
def test_save_pretrained_then_from_pretrained_is_bit_exact(name, mode, backend, tmp_path):
    x = images(4, seed=9)
    kwargs = {"num_classes": NUM_CLASSES, **({"stem_stride": 1} if name == "mobilenet_v2" else {})}
    model = refreshed(qzoo.get_model(name, **kwargs))
    if mode == "qat":
        model = qzoo.prepare_qat(model, backend)
        with torch.no_grad():
            model(x)
    elif mode == "int8":
        model = quantized_copy(model, backend)
    qzoo.save_pretrained(model, tmp_path, metrics={"synthetic": {"acc1": 1.0}})
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["architecture"], config["mode"], config["kwargs"]) == (name, mode, kwargs)
    loaded = qzoo.from_pretrained(tmp_path)
    assert loaded.training == (mode == "qat")  # a QAT model comes back ready to train on
    model.eval(), loaded.eval()
    assert torch.equal(run(loaded, x, backend), run(model, x, backend))
    assert qzoo.is_int8(loaded) == (mode == "int8")
    assert qzoo.fused_mode(loaded) == {"float": None, "qat": "qat", "int8": "ptq"}[mode]


def test_an_edited_model_card_is_never_overwritten(tmp_path):
    model = qzoo.resnet18(num_classes=NUM_CLASSES)
    qzoo.save_pretrained(model, tmp_path, metrics={"a": {"acc1": 1.0}})
    first = (tmp_path / "README.md").read_text()
    assert "| a | 1.0 |" in first
    qzoo.save_pretrained(model, tmp_path, metrics={"b": {"acc1": 2.0}})
    assert "| b | 2.0 |" in (tmp_path / "README.md").read_text()  # qzoo's own card is regenerated
    (tmp_path / "README.md").write_text(first + "\nHand-written notes.\n")
    qzoo.save_pretrained(model, tmp_path, metrics={"c": {"acc1": 3.0}})
    assert (tmp_path / "README.md").read_text().endswith("Hand-written notes.\n")


def test_metadata_the_config_cannot_hold_is_refused_before_anything_is_written(tmp_path):
    model = qzoo.resnet18(num_classes=NUM_CLASSES)
    for metadata, message in [({"metrics": {"a": torch.tensor(1.0)}}, "metrics=.*give {data: {metric: value}}"),
                              ({"metrics": {"a": {"acc1": torch.tensor(1.0)}}}, "metrics: .*Tensor is not JSON"),
                              ({"metrics": {"a": {"acc1": float("nan")}}}, "metrics: .*Out of range float"),
                              ({"recipe": {"lr": float("inf")}}, "recipe: .*Out of range float"),
                              ({"categories": ["a", "b"]},
                               f"categories: 2 class names for a model of num_classes={NUM_CLASSES}: give one name")]:
        with pytest.raises(ValueError, match=message):
            qzoo.save_pretrained(model, tmp_path / "out", **metadata)
        assert not (tmp_path / "out").exists()
    qzoo.save_pretrained(model, tmp_path / "out", metrics={"a": {"acc1": 1.0}})  # the retry needs no clean-up
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["metrics"] == {"a": {"acc1": 1.0}}
    config["categories"] = ["a"]  # a hand-edited config: one name for a model of NUM_CLASSES classes
    (tmp_path / "out" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"out/config.json: 1 class names for a model of num_classes={NUM_CLASSES}"):
        qzoo.workflow.load_model(str(tmp_path / "out"))


def test_a_ptq_prepared_or_foreign_model_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="calibrate and qzoo.convert"):
        qzoo.save_pretrained(qzoo.resnet18(prepare="ptq", num_classes=NUM_CLASSES), tmp_path)
    with pytest.raises(ValueError, match="not built by a qzoo factory"):
        qzoo.save_pretrained(torch.nn.Linear(2, 2), tmp_path)


def test_a_config_missing_a_key_names_the_fix(int8_folder, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in int8_folder.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    config = json.loads((copy / "config.json").read_text())
    del config["kwargs"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="lacks kwargs.*qzoo.save_pretrained"):
        qzoo.from_pretrained(copy)


def test_an_unknown_revision_names_the_fix(int8_folder, hub_cache, monkeypatch):
    with serving() as server:
        publish(server, int8_folder)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        with pytest.raises(FileNotFoundError, match="revision 'v9' does not exist in qzoo-test/resnet18-int8"):
            qzoo.from_pretrained(REPO, revision="v9")


def test_a_folder_whose_weights_changed_is_refused(int8_folder, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in int8_folder.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        qzoo.from_pretrained(copy)


def test_hub_download_caches_then_works_with_the_server_stopped(int8_folder, hub_cache, monkeypatch, capfd):
    x = images(4, seed=1)
    expected = run(qzoo.from_pretrained(int8_folder), x)
    with serving() as server:
        publish(server, int8_folder)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        assert torch.equal(run(qzoo.from_pretrained(REPO), x), expected)
        assert any("model.safetensors" in r for r in server.requests)
    assert "model.safetensors" in capfd.readouterr().err  # the download showed its progress bar
    assert torch.equal(run(qzoo.from_pretrained(REPO), x), expected)  # server gone: the cache answers
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert torch.equal(run(qzoo.from_pretrained(REPO), x), expected)


def test_offline_with_an_empty_cache_names_the_fix(hub_cache, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1.*hf download"):
        qzoo.from_pretrained(REPO)


def test_a_changed_file_from_the_server_is_caught_and_leaves_the_cache(int8_folder, hub_cache, monkeypatch,
                                                                       with_entries):
    entry = pretrained.Weights(name="resnet18.test_int8", architecture="resnet18", mode="int8",
                            sha256=file_sha256(int8_folder / "model.safetensors"),
                            hub_repo=REPO, hub_revision="0123456789abcdef0123456789abcdef01234567",
                            backend="x86", kwargs={"num_classes": NUM_CLASSES})
    with_entries(entry)
    with serving() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        publish(server, int8_folder)
        other = qzoo.save_pretrained(quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES), 3), "x86"),
                                     hub_cache.parent / "other")
        # a consistent but different folder: only the entry's pinned sha256 can tell
        publish(server, other)
        with pytest.raises(IntegrityError, match="expected " + entry.sha256):
            qzoo.from_pretrained(entry.name)
        blobs = list(hub_cache.rglob("blobs/*"))
        assert all(file_sha256(b) != file_sha256(other / "model.safetensors") for b in blobs)
        publish(server, int8_folder)
        assert qzoo.is_int8(qzoo.from_pretrained(entry.name))


def test_unknown_sources_and_unpublished_entries_say_where_to_load_them(with_entries):
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        qzoo.from_pretrained("no-such-folder")
    entry = pretrained.Weights(name="resnet18.local_int8", architecture="resnet18", mode="int8", sha256="0" * 64,
                            hub_repo="qzoo/resnet18.local_int8", backend="x86")
    with_entries(entry)
    with pytest.raises(ValueError, match="not published on the hub yet.*'weights/resnet18.local_int8'"):
        qzoo.from_pretrained(entry.name)
    assert qzoo.list_models(pretrained=True) == qzoo.list_weights()


def test_an_entry_not_on_the_hub_yet_reads_the_clones_weights_folder_pinned_to_its_hash(tmp_path, monkeypatch,
                                                                                       with_entries):
    """From a clone, ``from_pretrained(entry name)`` reads weights/<entry>/ (checked against the entry's
    sha256, not only the folder's own config): a consistent but different folder is refused."""
    folder = qzoo.save_pretrained(quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)), "x86"),
                                  tmp_path / "weights" / "resnet18.clone_int8")
    config = json.loads((folder / "config.json").read_text())
    monkeypatch.setattr(pretrained, "REPOSITORY_WEIGHTS", tmp_path / "weights")
    entry = pretrained.Weights(name="resnet18.clone_int8", architecture="resnet18", mode="int8",
                               sha256=config["sha256"], hub_repo="qzoo/resnet18.clone_int8", backend="x86",
                               kwargs={"num_classes": NUM_CLASSES})
    with_entries(entry)
    assert qzoo.is_int8(qzoo.from_pretrained(entry.name))
    with_entries(dataclasses.replace(entry, sha256="f" * 64))
    with pytest.raises(IntegrityError, match="expected " + "f" * 64):
        qzoo.from_pretrained(entry.name)


def test_environment_variables_drive_a_real_process(int8_folder, tmp_path):
    """HF_ENDPOINT and HF_HUB_OFFLINE as a user sets them, in a fresh interpreter."""
    script = f"import qzoo; print(qzoo.is_int8(qzoo.from_pretrained({REPO!r}, progress=False)))"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    with serving() as server:
        publish(server, int8_folder)
        online = subprocess.run([sys.executable, "-c", script], env={**env, "HF_ENDPOINT": server.url},
                                capture_output=True, text=True, timeout=120)
    assert online.stdout.strip() == "True", online.stderr
    offline = subprocess.run([sys.executable, "-c", script], env={**env, "HF_HUB_OFFLINE": "1"},
                             capture_output=True, text=True, timeout=120)
    assert offline.stdout.strip() == "True", offline.stderr


def test_push_to_hub_uploads_a_loadable_folder(monkeypatch, tmp_path):
    uploaded = {}

    class FakeApi:  # the upload itself is huggingface_hub's; qzoo's part is the folder it hands over
        def __init__(self, **kwargs):
            uploaded["library_name"] = kwargs["library_name"]

        def create_repo(self, repo_id, **kwargs):
            uploaded["repo"] = repo_id

        def upload_folder(self, repo_id, folder_path, commit_message):
            for item in Path(folder_path).iterdir():
                (tmp_path / item.name).write_bytes(item.read_bytes())
            return f"https://hub/{repo_id}/commit/1"

    monkeypatch.setattr(qzoo.hub.huggingface_hub, "HfApi", FakeApi)
    model = refreshed(qzoo.resnet18(num_classes=NUM_CLASSES))
    assert qzoo.push_to_hub(model, "me/r18") == "https://hub/me/r18/commit/1"
    assert uploaded == {"library_name": "qzoo", "repo": "me/r18"}
    x = images(2, seed=4)
    assert torch.equal(run(qzoo.from_pretrained(tmp_path), x), run(model, x))
    uploaded.clear()
    with pytest.raises(ValueError, match="calibrate and qzoo.convert"):  # nothing to upload: no repository made
        qzoo.push_to_hub(qzoo.resnet18(prepare="ptq", num_classes=NUM_CLASSES), "me/empty")
    with pytest.raises(ValueError, match="metrics: .*Out of range float"):
        qzoo.push_to_hub(model, "me/empty", metrics={"a": {"acc1": float("nan")}})
    assert "repo" not in uploaded


def test_entries_are_consistent():
    for name in qzoo.list_weights():
        entry = qzoo.get_weights(name)
        assert name.startswith(entry.architecture + ".") and entry.architecture in qzoo.list_models()
        if entry.url is None:  # qzoo's own files: the full hash
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.name
        else:  # torchvision's: the prefix it publishes in the file name
            assert re.fullmatch(r"[0-9a-f]{8,64}", entry.sha256) and entry.sha256 in entry.url.rsplit("/", 1)[1]
        assert sum(source is not None for source in (entry.url, entry.hub_repo, entry.package)) == 1  # one place
        assert (entry.package is None) == (entry.package_path is None) and (entry.layout is None or entry.package)
        if entry.mode == "int8":
            assert entry.backend in qzoo.BACKENDS and entry.unquantized.startswith(entry.architecture + ".")
            if entry.unquantized in pretrained.catalogue():  # float CIFAR-10 ResNet18 (45 MB) is not shipped
                assert pretrained.catalogue()[entry.unquantized].mode == "float"
    defaults = [(e.architecture, e.mode, tuple(e.metrics)) for e in pretrained.catalogue().values() if e.default]
    assert len(defaults) == len(set(defaults))
    assert dataclasses.asdict(qzoo.get_weights("mobilenet_v2.imagenet1k_qnnpack_v1"))["backend"] == "qnnpack"


# ----------------------------------------------------------------------------- one resolution order


def test_a_missing_path_is_never_looked_up_on_the_hub(int8_folder, hub_cache, tmp_path, monkeypatch):
    """``runs/r18-typo`` under an existing ``runs/`` is a path typo: no request leaves, and a hub repo of
    that name (served here) does not load in place of the user's folder; ``hf-hub:`` reaches it on purpose."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with serving() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        publish(server, int8_folder, repo="runs/r18-typo")
        for typo in ("runs/r18-typo", "./r18", "../r18", "~/no-such-qzoo-folder", "a/b/c", "r18/", Path("x/y")):
            with pytest.raises(FileNotFoundError, match="no folder at"):
                qzoo.from_pretrained(typo)
        assert server.requests == []
        assert qzoo.is_int8(qzoo.from_pretrained("hf-hub:runs/r18-typo", progress=False))
        assert server.requests


def test_a_local_folder_never_impersonates_a_pinned_entry(int8_folder, hub_cache, tmp_path, monkeypatch,
                                                         with_entries):
    """A folder named like an entry, in the working directory, holding another model: the entry name
    still loads the entry (its pinned sha256 checked); ``./name`` loads the folder."""
    entry = pretrained.Weights(name="resnet18.test_int8", architecture="resnet18", mode="int8",
                               sha256=file_sha256(int8_folder / "model.safetensors"), hub_repo=REPO,
                               hub_revision="0123456789abcdef0123456789abcdef01234567", backend="x86",
                               kwargs={"num_classes": NUM_CLASSES})
    with_entries(entry)
    monkeypatch.chdir(tmp_path)
    impostor = qzoo.save_pretrained(quantized_copy(refreshed(qzoo.mobilenet_v2(num_classes=NUM_CLASSES))),
                                    tmp_path / entry.name)
    with serving() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        publish(server, int8_folder)
        assert isinstance(qzoo.from_pretrained(entry.name, progress=False), qzoo.QuantizableResNet)
    assert isinstance(qzoo.from_pretrained(f"./{impostor.name}"), qzoo.QuantizableMobileNetV2)


def test_an_unknown_name_suggests_close_models_and_entries():
    with pytest.raises(FileNotFoundError, match="did you mean resnet18"):
        qzoo.from_pretrained("resnet19")


def test_a_folder_without_config_names_what_it_needs(tmp_path):
    (tmp_path / "empty").mkdir()
    for call in (qzoo.from_pretrained, qzoo.hub.read_config):
        with pytest.raises(FileNotFoundError, match="empty needs config.json and model.safetensors"):
            call(tmp_path / "empty")


def test_a_trickling_hub_server_cannot_block_past_the_deadline(int8_folder, hub_cache, monkeypatch):
    import time

    with serving() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("QZOO_HUB_TIMEOUT", "3")
        publish(server, int8_folder)
        server.throttle(1.0)  # 64 KiB a second: the 11 MB file would take three minutes
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="model.safetensors did not arrive within 3 s.*QZOO_HUB_TIMEOUT"):
            qzoo.from_pretrained(REPO, progress=False)
        assert time.monotonic() - started < 15
        server.throttle(0)
    assert not any(p.name == "model.safetensors" for p in hub_cache.rglob("snapshots/*/*"))
