"""The rules every command that writes follows (checked before any work), and argument validation."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import HEAVY, NUM_CLASSES, arguments, images, make_image_folder, quantized_copy, refreshed

import qzoo
import qzoo.cli
from qzoo import workflow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory):
    model = quantized_copy(refreshed(qzoo.resnet18(num_classes=3)))
    return qzoo.save_pretrained(model, tmp_path_factory.mktemp("int8") / "model")


@pytest.fixture
def no_work(monkeypatch):
    """Any model loading fails the test: the refusals below must come before any work."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(workflow, "load_model", refuse)


def fails_with_one_line(capsys, *argv: str) -> str:
    assert qzoo.cli.main([*argv, "--json"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qzoo: error: "), lines
    return lines[0]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_an_out_folder_qzoo_did_not_write_is_never_touched(tiny_data, tmp_path, capsys, no_work):
    foreign = tmp_path / "o"
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes(os.urandom(1000))
    (foreign / "config.json").write_text("{}")
    before = snapshot(foreign)
    for extra in ((), ("--overwrite",)):
        line = fails_with_one_line(capsys, "ptq", "resnet18", "--data", str(tiny_data), "--calib-images", "16",
                                   "--image-size", "32", "--out", str(foreign), *extra)
        assert "not empty" in line or "qzoo did not write" in line
    with pytest.raises(ValueError, match="qzoo did not write"):
        qzoo.save_pretrained(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)), foreign)
    (foreign / "config.json").unlink()  # weights without any config: refused too
    with pytest.raises(ValueError, match="qzoo did not write"):
        qzoo.save_pretrained(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)), foreign)
    assert snapshot(foreign) == {"model.safetensors": before["model.safetensors"]}


def test_a_save_interrupted_between_its_files_does_not_block_the_next(tmp_path):
    """qzoo's own weights without their config (a save killed between the two atomic writes) are replaced."""
    model = refreshed(qzoo.resnet18(num_classes=NUM_CLASSES))
    folder = qzoo.save_pretrained(model, tmp_path / "m")
    (folder / "config.json").unlink()
    qzoo.save_pretrained(model, folder)
    assert torch.equal(qzoo.from_pretrained(folder).fc.weight, model.fc.weight)
    (folder / "config.json").unlink()
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")  # not qzoo's
    with pytest.raises(ValueError, match="qzoo did not write"):
        qzoo.save_pretrained(model, folder)


def test_ptq_never_replaces_its_own_source(int8_folder, tiny_data, capsys, no_work):
    before = snapshot(int8_folder)
    line = fails_with_one_line(capsys, "ptq", str(int8_folder), "--data", str(tiny_data), "--out", str(int8_folder),
                               "--overwrite")
    assert "is the source folder" in line and snapshot(int8_folder) == before


def test_export_never_writes_over_the_source_or_an_existing_file(int8_folder, tmp_path, capsys, no_work):
    before = snapshot(int8_folder)
    line = fails_with_one_line(capsys, "export", str(int8_folder), "--out", str(int8_folder / "model.safetensors"),
                               "--overwrite")
    assert "inside the source folder" in line and snapshot(int8_folder) == before
    existing = tmp_path / "m.pt"
    existing.write_bytes(b"mine")
    assert "exists; choose a new file name" in fails_with_one_line(capsys, "export", str(int8_folder), "--out",
                                                                   str(existing))
    assert "is a folder" in fails_with_one_line(capsys, "export", str(int8_folder), "--out", str(tmp_path))
    assert existing.read_bytes() == b"mine" and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_non_empty_out_needs_overwrite_and_then_replaces_the_qzoo_model(int8_folder, tiny_data, tmp_path, capsys):
    out = tmp_path / "out"
    qzoo.save_pretrained(refreshed(qzoo.resnet18(num_classes=3)), out)
    assert "pass --overwrite" in fails_with_one_line(capsys, "ptq", "resnet18", "--data", str(tiny_data),
                                                     "--image-size", "32", "--calib-images", "12", "--out", str(out))
    assert qzoo.cli.main(["ptq", "resnet18", "--data", str(tiny_data), "--image-size", "32", "--calib-images", "12",
                          "--out", str(out), "--overwrite", "--json"]) == 0
    assert qzoo.is_int8(qzoo.from_pretrained(out))


def test_saved_files_are_readable_like_any_other_file_and_dead_partials_are_removed(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    stale = folder / ".model.safetensors.99999999.partial"  # a save killed mid-write, long ago
    stale.write_bytes(b"half")
    nested = folder / "..model.safetensors.99999999.partial.99999999.partial"
    nested.write_bytes(b"half")
    qzoo.save_pretrained(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_the_config_records_the_hash_of_the_bytes_this_save_wrote(tmp_path, monkeypatch):
    """A second writer replacing model.safetensors between this save's write and its hash cannot make the
    config vouch for the other file: the hash is taken before the file takes its real name."""
    folder = tmp_path / "m"
    other = qzoo.save_pretrained(quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES), 3)), tmp_path / "b")
    real_sha256 = qzoo.hub.file_sha256

    def racing_sha256(path):
        if (folder / "model.safetensors").parent.is_dir():  # the other save lands meanwhile
            (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
        return real_sha256(path)

    monkeypatch.setattr(qzoo.hub, "file_sha256", racing_sha256)
    mine = quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)))
    qzoo.save_pretrained(mine, folder)
    monkeypatch.undo()
    x = images(2, seed=1)
    with torch.inference_mode():
        assert torch.equal(qzoo.from_pretrained(folder)(x), mine(x))


@pytest.mark.parametrize(("argv", "flag"), [
    (("ptq", "resnet18", "--data", "d", "--out", "o", "--calib-images", "0"), "--calib-images"),
    (("ptq", "resnet18", "--data", "d", "--out", "o", "--image-size", "0"), "--image-size"),
    (("qat", "resnet18", "--data", "d", "--out", "o", "--lr", "nan"), "--lr"),
    (("qat", "resnet18", "--data", "d", "--out", "o", "--epochs", "0"), "--epochs"),
    (("qat", "resnet18", "--data", "d", "--out", "o", "--weight-decay", "-1"), "--weight-decay"),
    (("bench", "resnet18", "--repeats", "0"), "--repeats"),
    (("bench", "resnet18", "--batches", "1", "0"), "--batches"),
])
def test_bad_numbers_are_refused_before_any_work_naming_the_flag(argv, flag, capsys, no_work):
    with pytest.raises(SystemExit) as status:
        qzoo.cli.main(list(argv))
    assert status.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_nan_or_inf_images_are_refused_by_int8_models():
    """The check takes the batch's max and min (NaN propagates through both): a NaN, an Inf of either sign,
    or both, anywhere (the last value too, and in a channels-last batch) are refused; huge finite values
    whose sum overflows are not; an empty batch runs as before."""
    model = quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)))
    for bad in ((float("nan"),), (float("inf"),), (-float("inf"),), (float("inf"), -float("inf"))):
        for where in (slice(None, len(bad)), slice(-len(bad), None)):
            x = images(2, seed=1)
            x.view(-1)[where] = torch.tensor(bad)
            for batch in (x, x.contiguous(memory_format=torch.channels_last)):
                with pytest.raises(ValueError, match="NaN or Inf"):
                    model(batch)
    huge = images(2, seed=1)
    huge[0] = 3e38  # finite, but the sum is inf
    assert not torch.isfinite(huge.sum()) and model(huge).shape == (2, NUM_CLASSES)
    assert model(images(2, seed=1)[:0]).shape == (0, NUM_CLASSES)  # numpy's max of nothing would raise


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_an_int8_model_under_torch_compile_gives_its_eager_logits_and_still_refuses_nan(mode):
    """torch.compile(int8 model) runs the input check outside its graph: under inference_mode, tracing it
    failed dynamo's guards (torch 2.14); its logits are the eager model's, bit for bit, and NaN is refused."""
    model = quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)))
    x = images(2, seed=1)
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with mode():
        expected = model(x)
        assert expected.std() > 0 and torch.equal(compiled(x), expected)
        x[1, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN or Inf"):
            compiled(x)


def test_torchvision_weights_offline_name_the_fix(torch_home, capsys, with_entries):
    import dataclasses

    entry = qzoo.get_weights("resnet18.imagenet1k_v1")
    with_entries(dataclasses.replace(entry, url="http://127.0.0.1:9/resnet18-f37072fd.pth"))  # nothing listens
    with pytest.raises(FileNotFoundError, match="cannot be reached.*connect once, or copy the file"):
        qzoo.resnet18(weights="DEFAULT", progress=False)


def test_a_split_layout_missing_a_split_is_not_read_as_one_class(tiny_data, tmp_path, capsys, no_work):
    only_train = tmp_path / "only-train"
    (only_train / "train").mkdir(parents=True)
    (only_train / "train" / "cat").symlink_to(tiny_data / "train" / "cat")
    line = fails_with_one_line(capsys, "ptq", "resnet18", "--data", str(only_train), "--out", str(tmp_path / "o"))
    assert "holds train/ but no test/" in line


# ----------------------------------------------------------------------------- hostile inputs: one error line each


def archive_of(path, members: dict[str, bytes]):
    """A .tar.gz, or a .zip (deflated) when ``path`` ends so, holding ``members`` by name as given."""
    import io
    import tarfile
    import zipfile

    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
            for name, payload in members.items():
                bundle.writestr(name, payload)
        return path
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_a_zip_made_on_a_mac_reads_as_its_folder(tiny_data, tmp_path, private_cache, capsys):
    """Finder's "Compress" wraps the folder and adds ``__MACOSX/`` with a ``._name`` resource fork per file."""
    members = {}
    for path in sorted(tiny_data.rglob("*.png")):
        name = f"photos/{path.relative_to(tiny_data).as_posix()}"
        members[name] = path.read_bytes()
        members[f"__MACOSX/{name.rpartition('/')[0]}/._{path.name}"] = b"\x00\x05\x16\x07 resource fork"
    bundle = archive_of(tmp_path / "photos.zip", members)
    reports = []
    for data in (tiny_data, bundle):
        torch.manual_seed(0)  # the same random-init model both times
        assert qzoo.cli.main(["eval", "resnet18", "--data", str(data), "--image-size", "32", "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[1]["acc1"] == reports[0]["acc1"] and reports[1]["images"] == reports[0]["images"] == 18


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_an_archive_bomb_is_refused_before_anything_is_written(suffix, tmp_path, private_cache, capsys, monkeypatch):
    bomb = archive_of(tmp_path / f"bomb{suffix}", {"d/train/a/0.png": bytes(100 << 20)})  # 100 MiB of zeros


    assert bomb.stat().st_size < 1 << 20
    line = fails_with_one_line(capsys, "eval", "resnet18", "--data", str(bomb))
    assert "would unpack to 104,857,600 bytes" in line and "QZOO_MAX_UNPACK_BYTES" in line
    assert not private_cache.exists() or not any(private_cache.rglob("*.png"))
    monkeypatch.setenv("QZOO_MAX_UNPACK_BYTES", str(200 << 20))  # the user vouches for it: it unpacks
    line = fails_with_one_line(capsys, "eval", "resnet18", "--data", str(bomb))
    assert "would unpack" not in line and any(private_cache.rglob("*.png"))


def test_a_dead_extractions_staging_folder_is_removed(tmp_path, private_cache):
    archive = archive_of(tmp_path / "set.tar.gz", {"set/train/a/0.txt": b"x"})
    from qzoo import data

    root = private_cache / "datasets"
    target_name = f"set-{qzoo._files.file_sha256(archive)[:16]}"
    stale = root / f".{target_name}.99999999.partial"
    (stale / "half").mkdir(parents=True)
    assert data.unpack_archive(archive).name == target_name
    assert sorted(p.name for p in root.iterdir()) == [target_name]


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
@pytest.mark.parametrize("kind", ["not an archive", "truncated", "escaping member", "link"])
def test_bad_archives_give_one_line(kind, suffix, tmp_path, private_cache, capsys):
    import zipfile

    path = tmp_path / f"bad{suffix}"
    if kind == "not an archive":
        path.write_bytes(b"plain text, not an archive")
    elif kind == "truncated":
        full = archive_of(tmp_path / f"full{suffix}", {"d/train/a/0.png": os.urandom(200_000)})
        path.write_bytes(full.read_bytes()[:50_000])
    elif kind == "link" and suffix == ".zip":
        with zipfile.ZipFile(path, "w") as bundle:
            link = zipfile.ZipInfo("d/train/a/0.png")
            link.external_attr = (0o120777 << 16)  # a symlink, as Info-ZIP stores one
            bundle.writestr(link, "/etc/passwd")
    elif kind == "link":
        import tarfile

        with tarfile.open(path, "w:gz") as tar:
            link = tarfile.TarInfo("d/train/a/0.png")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
    else:
        archive_of(path, {"../outside.png": b"x"})
    line = fails_with_one_line(capsys, "eval", "resnet18", "--data", str(path))
    assert f"bad{suffix}" in line
    assert not (tmp_path / "outside.png").exists() and not private_cache.joinpath("outside.png").exists()
    assert not any(private_cache.rglob("0.png"))


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_an_absolute_member_name_lands_inside_the_folder(suffix, tmp_path, private_cache):
    from qzoo import data

    outside = tmp_path / "outside"
    unpacked = data.unpack_archive(archive_of(tmp_path / f"abs{suffix}", {f"{outside}/0.png": b"x"}))
    assert (unpacked / outside.relative_to("/") / "0.png").read_bytes() == b"x" and not outside.exists()


def test_an_encrypted_zip_is_named_as_such(tmp_path, private_cache, capsys):
    import zipfile

    path = archive_of(tmp_path / "locked.zip", {"d/train/a/0.png": b"x"})
    raw = bytearray(path.read_bytes())  # set the encryption bit, as a password-protected zip has it
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local header, central directory
        raw[raw.index(signature) + offset] |= 0x1
    path.write_bytes(bytes(raw))
    assert zipfile.ZipFile(path).infolist()[0].flag_bits & 0x1
    line = fails_with_one_line(capsys, "eval", "resnet18", "--data", str(tmp_path / "locked.zip"))
    assert "'d/train/a/0.png' is encrypted" in line


def test_a_file_that_is_no_archive_is_named_as_such(tmp_path, private_cache, capsys):
    (tmp_path / "photos.7z").write_bytes(b"7z\xbc\xaf")
    line = fails_with_one_line(capsys, "eval", "resnet18", "--data", str(tmp_path / "photos.7z"))
    assert "photos.7z is a file, not a data folder or archive" in line and ".tar.gz or .zip" in line


def test_broken_images_give_one_line_naming_the_file(tiny_data, tmp_path, private_cache, capsys, monkeypatch):
    from PIL import Image

    data_dir = tmp_path / "d"
    shutil.copytree(tiny_data, data_dir)
    jpeg = data_dir / "test" / "cat" / "cut.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])  # cut inside its data
    line = fails_with_one_line(capsys, "eval", "resnet18", "--data", str(data_dir), "--image-size", "32")
    assert "cut.jpg is not a readable image" in line and line.endswith("remove it from the data folder")
    jpeg.unlink()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # so a small PNG stands for a 15000x15000 one
    big = data_dir / "test" / "cat" / "big.png"
    Image.new("RGB", (100, 100)).save(big)
    line = fails_with_one_line(capsys, "eval", "resnet18", "--data", str(data_dir), "--image-size", "32")
    assert "big.png is not a readable image" in line and "decompression bomb" in line


@pytest.mark.parametrize("edit", ["infinite width", "nested", "transforms"])
def test_edited_configs_give_one_line(edit, tmp_path, tiny_data, capsys):
    import json

    folder = qzoo.save_pretrained(refreshed(qzoo.mobilenet_v2(num_classes=3)), tmp_path / "m",
                                  transforms={"crop_size": 32, "resize_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3})
    config_path = folder / "config.json"
    text = config_path.read_text()
    config = json.loads(text)
    if edit == "infinite width":
        config["kwargs"]["width_mult"] = float("inf")
        text = json.dumps(config)
    elif edit == "nested":
        text = text[:-2] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    else:
        config["transforms"] = {"crop_size": "big", "mean": 1}
        text = json.dumps(config)
    config_path.write_text(text)
    line = fails_with_one_line(capsys, "eval", str(folder), "--data", str(tiny_data))
    assert "config.json" in line


class _Tied(torch.nn.Module):
    """Logits where classes 1, 3 and 4 share the best score and 0 and 2 the next one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[2.0, 5.0, 2.0, 5.0, 5.0]]).expand(len(x), 5)


def test_predict_lists_tied_classes_by_class_index(tmp_path):
    """`qzoo predict` ranks equal scores as every qzoo accuracy does: the lower class index first."""
    from PIL import Image
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (90, 120, 30)).save(photo)
    loaded = workflow.Loaded(_Tied(), None, tuple("abcde"), "tied")
    (result,) = workflow.predict(loaded, [str(photo)], top=5)
    assert [row["label"] for row in result["top"]] == ["b", "d", "e", "a", "c"]
    best = [row["probability"] for row in result["top"][:3]]
    assert best == [best[0]] * 3 and best[0] > result["top"][3]["probability"]


class _Seen(torch.nn.Module):
    """Keeps the images it was called with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return torch.zeros(len(x), 2)


def test_predict_turns_phone_photos_upright_and_data_folders_stay_as_torchvision_reads_them(tmp_path):
    """A photo stored sideways with EXIF orientation 6 (as phones write them) is classified as it is shown:
    the model sees exactly the upright image's pixels. Data folders are read without EXIF, as torchvision's
    ImageFolder reads them, so measured accuracies stay comparable with its."""
    from PIL import Image

    upright = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 48, 3), dtype=np.uint8))
    upright.save(tmp_path / "upright.png")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote; EXIF says: turn it back
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.png", exif=exif)
    model = _Seen()
    loaded = workflow.Loaded(model, None, ("a", "b"), "seen")
    seen = []
    for name in ("upright.png", "phone.png"):
        workflow.predict(loaded, [str(tmp_path / name)], top=1)
        seen.append(model.seen)
    assert torch.equal(seen[0], seen[1]) and seen[0].std() > 0
    assert qzoo.data.read_rgb(tmp_path / "phone.png").size == (30, 48)  # data folders: as stored
    assert qzoo.data.read_rgb(tmp_path / "phone.png", upright=True).size == (48, 30)


def test_predict_takes_a_folder_as_the_images_below_it(tmp_path):
    """A folder stands for its image files, sorted, hidden ones left out; an empty one is one error."""
    from PIL import Image

    for name in ("b.png", "a.jpg", "sub/c.png", ".hidden.png", ".ipynb_checkpoints/d.png"):
        (tmp_path / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (90, 120, 30)).save(tmp_path / "photos" / name)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    loaded = workflow.Loaded(_Tied(), None, tuple("abcde"), "tied")
    results = workflow.predict(loaded, [str(tmp_path / "photos"), str(tmp_path / "empty")], top=1)
    assert [Path(r["image"]).relative_to(tmp_path).as_posix() for r in results] == [
        "photos/a.jpg", "photos/b.png", "photos/sub/c.png", "empty"]
    assert all(r["top"][0]["label"] == "b" for r in results[:3])
    assert results[3]["error"].endswith("empty: a folder without image files (.jpg, .jpeg, .png, .bmp, .webp)")


GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20
"""The largest block glibc's malloc serves from memory it keeps (64-bit): bigger ones are mapped afresh per call."""


@pytest.mark.parametrize("name", HEAVY)
def test_evaluation_batches_keep_every_float_activation_under_the_allocators_mapping_size(name):
    """At its input size (224, or 299 for Inception v3), every family's smallest member evaluated in batches of
    evaluation_batch_size() makes no float activation that glibc maps afresh (and faults in) on every call."""
    size = qzoo.registry.model_spec(name).input_size[1]
    model = qzoo.get_model(name, **arguments(name)).eval()
    largest = []
    for module in model.modules():
        if not list(module.children()):
            module.register_forward_hook(lambda _, __, out: largest.append(out.numel() * out.element_size()))
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    batch = workflow.evaluation_batch_size(size)
    assert batch * max(largest) < GLIBC_MMAP_THRESHOLD_MAX
    assert batch == (4 if size == 224 else 2)


def test_evaluation_runs_224_pixel_images_4_at_a_time_and_cifar_sized_ones_together(tiny_data):
    model = qzoo.resnet18(num_classes=3).eval()
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[0]))
    loaded = workflow.Loaded(model, None, (), "resnet18")
    by_size = {}
    for image_size in (224, 32):
        sizes.clear()
        metrics = workflow.evaluate_model(loaded, str(tiny_data), image_size=image_size, progress=False)
        by_size[image_size] = list(sizes)
        assert metrics["images"] == 18
    assert by_size == {224: [4, 4, 4, 4, 2], 32: [18]}


def test_sensitivity_reads_its_test_images_in_evaluation_batches(tiny_data, monkeypatch):
    """qzoo sensitivity's per-layer runs go 4 images at a time at 224x224 (the same report as in batches of 8,
    faster: docs/benchmarks.md, the allocator section)."""
    seen: list[int] = []

    def recording(prepared, batches, progress):
        seen.extend(len(images) for images, _ in batches)
        return {"layers": []}

    monkeypatch.setattr(workflow.sensitivity, "sensitivity", recording)
    loaded = workflow.Loaded(qzoo.resnet18(num_classes=3).eval(), None, (), "resnet18")
    workflow.sensitivity_report(loaded, str(tiny_data), calib_images=8, image_size=224, progress=False)
    assert seen == [4, 4, 4, 4, 2]


def test_bench_times_each_batch_size_on_its_own_int8_copy_first_called_at_that_size(monkeypatch):
    """torch's x86 engine keeps one fast path per packed conv weight, for the first input shape and thread count it
    sees: qzoo bench traces a fresh copy of the int8 model for each batch size with a batch of that size (its first
    call), so no timing runs on a model that another batch size set up (docs/benchmarks.md)."""
    traced: list[tuple[int, int]] = []
    real = workflow.optimize_for_inference

    def recording(model, example, **options):
        if options.get("runtime", "torch") == "torch":
            traced.append((id(model), example.shape[0]))
        return real(model, example, **options)

    monkeypatch.setattr(workflow, "optimize_for_inference", recording)
    int8 = quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES)))
    report = workflow.bench(workflow.Loaded(int8, None, (), "resnet18"), image_size=32, batches=(1, 4), repeats=2)
    assert [batch for _, batch in traced] == [1, 4] and len({model for model, _ in traced}) == 2
    assert id(int8) not in {model for model, _ in traced}
    assert list(report["latency_ms"]) == ["1", "4"]


def test_the_synthetic_demo_times_each_batch_size_on_its_own_int8_copy(monkeypatch):
    """qzoo demo --model calls its int8 model on 64 held-out images first; its timings run on fresh copies, one per
    batch size, so no timing runs on the path another batch size left (docs/benchmarks.md)."""
    int8_runners: list[torch.nn.Module] = []
    real = qzoo.demo.interleaved_latency_ms

    def recording(runners, images, **options):
        int8_runners.append(runners["int8"])
        return real(runners, images, **options)

    monkeypatch.setattr(qzoo.demo, "interleaved_latency_ms", recording)
    report = qzoo.demo.run_demo("resnet18", image_size=32, calibration_images=16, repeats=2, progress=False)
    assert len(int8_runners) == 2 and int8_runners[0] is not int8_runners[1]
    assert list(report["latency_ms"]) == ["1", "16"]


def test_bench_batches_reach_the_job_in_the_order_asked_once_each(monkeypatch, capsys):
    asked = {}

    def recording(source, **options):
        asked.update(options)
        return {"source": source}

    monkeypatch.setattr(workflow, "run_bench", recording)
    assert qzoo.cli.main(["bench", "resnet18", "--batches", "3", "1", "3", "--json"]) == 0
    assert asked["batches"] == (3, 1)


def test_optimize_for_inference_traces_one_image_unless_given_an_example(monkeypatch):
    """Its trace is the packed weights' first call, which fixes torch's fast path: by default one image, batch 1."""
    made: list[int] = []
    real = qzoo.inference.synthetic_images
    monkeypatch.setattr(qzoo.inference, "synthetic_images",
                        lambda count, *args, **kw: made.append(count) or real(count, *args, **kw))
    qzoo.optimize_for_inference(quantized_copy(refreshed(qzoo.resnet18(num_classes=NUM_CLASSES))), image_size=32)
    assert made == [1]
