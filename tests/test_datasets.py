"""Data sets by name (``--data torch/cifar10``, ``torch/imagenet``): torchvision's download and unpacking
code run against files the tests make, served from 127.0.0.1; then qzoo's own reading, the CLI, offline runs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from loopback import serving
from PIL import Image
from torchvision import datasets as tv_datasets
from torchvision.datasets import imagenet as tv_imagenet

import qzoo
import qzoo.cli
from qzoo import datasets
from qzoo.data import ImageTensors

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_PER_BATCH, TEST_IMAGES = 20, 30


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _batch(rng: np.random.Generator, count: int, offset: int) -> tuple[bytes, np.ndarray, list[int]]:
    """One CIFAR batch as CIFAR's python files hold it: numpy-1 era globals, latin-1 keys, rows of 3072 bytes."""
    labels = [(offset + i) % 10 for i in range(count)]
    pixels = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
    body = {"batch_label": "b", "labels": labels, "data": pixels, "filenames": [f"{offset + i}.png" for i in range(count)]}
    data = pickle.dumps(body, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    return data, pixels, labels


@pytest.fixture(scope="module")
def cifar_archive():
    """A tiny CIFAR-10 in the python-version layout, its md5s and the pixels it holds."""
    rng = np.random.default_rng(0)
    files, truth = {}, {"train": ([], []), "test": ([], [])}
    for index in range(5):
        files[f"data_batch_{index + 1}"], pixels, labels = _batch(rng, TRAIN_PER_BATCH, index * TRAIN_PER_BATCH)
        truth["train"][0].append(pixels), truth["train"][1].extend(labels)
    files["test_batch"], pixels, labels = _batch(rng, TEST_IMAGES, 0)
    truth["test"][0].append(pixels), truth["test"][1].extend(labels)
    files["batches.meta"] = pickle.dumps({"label_names": list(CLASSES), "num_vis": 3072}, protocol=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pixels = {split: np.concatenate(arrays).reshape(-1, 3, 32, 32) for split, (arrays, _) in truth.items()}
    return {"archive": buffer.getvalue(), "md5": {name: _md5(data) for name, data in files.items()},
            "pixels": pixels, "labels": {split: labels for split, (_, labels) in truth.items()}}


@pytest.fixture
def tiny_cifar10(cifar_archive, monkeypatch):
    """torchvision's CIFAR10 pointed at a loopback server holding the tiny archive (URL and checksums)."""
    md5 = cifar_archive["md5"]
    monkeypatch.setattr(tv_datasets.CIFAR10, "tgz_md5", _md5(cifar_archive["archive"]))
    monkeypatch.setattr(tv_datasets.CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(tv_datasets.CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(tv_datasets.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                                      "md5": md5["batches.meta"]})
    with serving() as server:
        server.files["cifar-10-python.tar.gz"] = cifar_archive["archive"]
        monkeypatch.setattr(tv_datasets.CIFAR10, "url", f"{server.url}/cifar-10-python.tar.gz")
        yield server


def _cli(capsys, *args: str) -> tuple[int, dict, str]:
    status = qzoo.cli.main([*args, "--json"])
    captured = capsys.readouterr()
    return status, (json.loads(captured.out) if status == 0 else {}), captured.err


def test_cifar10_by_name_downloads_once_then_ptq_and_eval_run_offline(tiny_cifar10, cifar_archive, tmp_path,
                                                                      capsys):
    data_dir, out = tmp_path / "data", tmp_path / "int8"
    status, report, err = _cli(capsys, "ptq", "resnet18", "--data", "torch/cifar10", "--data-dir", str(data_dir),
                               "--calib-images", "32", "--out", str(out))
    assert status == 0, err
    fetched = len(tiny_cifar10.requests)
    assert fetched and set(tiny_cifar10.requests) == {"GET /cifar-10-python.tar.gz"}  # torchvision's URL
    assert (data_dir / "cifar-10-python.tar.gz").read_bytes() == cifar_archive["archive"]
    assert report["calibration_images"] == 32 and report["int8"]["images"] == TEST_IMAGES
    config = json.loads((out / "config.json").read_text())
    assert config["categories"] == list(CLASSES)  # names from the data set's meta file, recorded
    assert config["transforms"]["crop_size"] == 32  # a bare model on CIFAR gets CIFAR's preprocessing
    tiny_cifar10.stop()  # offline from here: everything comes from --data-dir
    assert len(tiny_cifar10.requests) == fetched  # ptq's second split came from disk too
    status, evaluated, err = _cli(capsys, "eval", str(out), "--data", "torch/cifar10", "--data-dir", str(data_dir))
    assert status == 0, err
    assert evaluated["acc1"] == report["int8"]["acc1"] and evaluated["data"] == "torch/cifar10 (test)"
    assert {c["name"] for c in evaluated["weakest_classes"]} <= set(CLASSES) and len(evaluated["weakest_classes"]) == 5
    status, _, err = _cli(capsys, "eval", str(out), "--data", "torch/cifar10", "--data-dir", str(tmp_path / "empty"))
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "--data-dir" in err and "cifar-10-python.tar.gz" in err and "download" in err


def test_cifar10_pixels_and_labels_are_the_files(tiny_cifar10, cifar_archive, tmp_path):
    for split in ("train", "test"):
        images = datasets.load_split("torch/cifar10", split, 32, root=tmp_path, progress=False)
        assert torch.equal(images.images, torch.from_numpy(cifar_archive["pixels"][split]))
        assert images.labels.tolist() == cifar_archive["labels"][split] and images.classes == CLASSES
    resized = datasets.load_split("torch/cifar10", "test", 48, resize=56, root=tmp_path, progress=False)
    assert resized.images.shape == (TEST_IMAGES, 3, 48, 48)
    sample = datasets.load_split("torch/cifar10", "train", 32, root=tmp_path, sample=20, seed=3, progress=False)
    assert sample.labels.bincount().tolist() == [2] * 10  # class-balanced


def test_cifar_file_that_fails_its_checksum_is_fetched_again(tiny_cifar10, tmp_path):
    datasets.load_split("torch/cifar10", "test", 32, root=tmp_path, progress=False)
    fetched = len(tiny_cifar10.requests)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:-10])  # cut short, as an interrupted copy leaves it
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"partial")  # and the archive too
    images = datasets.load_split("torch/cifar10", "test", 32, root=tmp_path, progress=False)
    assert len(images) == TEST_IMAGES
    assert len(tiny_cifar10.requests) == 2 * fetched


def test_a_cifar_batch_that_would_run_code_is_refused(tiny_cifar10, monkeypatch, tmp_path):
    datasets.load_split("torch/cifar10", "test", 32, root=tmp_path, progress=False)
    evil = pickle.dumps(os.system)  # a global that is not an array: the unpickler must not resolve it
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(evil)
    monkeypatch.setattr(tv_datasets.CIFAR10, "test_list", [["test_batch", _md5(evil)]])  # even with a matching md5
    with pytest.raises(ValueError, match=r"test_batch is not a CIFAR batch \(posix.system is not part"):
        datasets.load_split("torch/cifar10", "test", 32, root=tmp_path, progress=False)


def test_unknown_names_and_a_folder_called_torch(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="knows the data sets torch/cifar10, torch/cifar100, torch/imagenet"):
        datasets.load_split("torch/mnist", "test", 32, root=tmp_path)
    (tmp_path / "torch" / "cifar10").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert datasets.is_dataset_name("torch/cifar10") is False  # an existing folder of that name is a folder
    assert datasets.is_dataset_name("TORCH/CIFAR100") is True


# ------------------------------------------------------------------------------------------ ImageNet

WNIDS = ("n01440764", "n01443537", "n02085620")
WORDS = ("tench, Tinca tinca", "goldfish, Carassius auratus", "Chihuahua")


def _jpeg(colour: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (colour, 255 - colour, 128)).save(buffer, "JPEG")
    return buffer.getvalue()


def _tar(members: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def tiny_imagenet(tmp_path, monkeypatch):
    """ImageNet's three files in miniature (devkit with meta.mat, val tar, train tar of per-class tars),
    their md5s given to torchvision as it pins the real ones."""
    scipy_io = pytest.importorskip("scipy.io", reason="torch/imagenet reads the devkit with scipy (qzoo[imagenet])")
    fields = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children")  # the real file's first five, in order
    synsets = np.zeros(len(WNIDS) + 1, dtype=[(f, "O") for f in fields])
    for index, (wnid, words) in enumerate(zip(WNIDS, WORDS)):
        synsets[index] = (index + 1, wnid, words, "a gloss", 0)
    synsets[-1] = (len(WNIDS) + 1, "n00001740", "entity", "that which exists", 3)  # WordNet's inner node: no class
    meta = io.BytesIO()
    scipy_io.savemat(meta, {"synsets": synsets})
    val_labels = [2, 0, 1, 2, 1, 0]  # ILSVRC ids - 1 of the validation images, in file-name order
    devkit = _tar({"ILSVRC2012_devkit_t12/data/meta.mat": meta.getvalue(),
                   "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt":
                       "".join(f"{label + 1}\n" for label in val_labels).encode()}, "w:gz")
    val = _tar({f"ILSVRC2012_val_{i + 1:08d}.JPEG": _jpeg(40 * label) for i, label in enumerate(val_labels)})
    train = _tar({f"{wnid}.tar": _tar({f"{wnid}_{i}.JPEG": _jpeg(40 * label + i) for i in range(4)})
                  for label, wnid in enumerate(WNIDS)})
    root = tmp_path / "imagenet"
    root.mkdir()
    for key, data in (("devkit", devkit), ("val", val), ("train", train)):
        name = tv_imagenet.ARCHIVE_META[key][0]
        (root / name).write_bytes(data)
        monkeypatch.setitem(tv_imagenet.ARCHIVE_META, key, (name, _md5(data)))
    return root, val_labels


def test_imagenet_by_name_reads_the_devkit_names_and_runs_ptq_and_eval(tiny_imagenet, tmp_path, capsys):
    root, val_labels = tiny_imagenet
    test = datasets.load_split("torch/imagenet", "test", 24, resize=24, root=root, progress=False)
    assert test.classes == WNIDS and test.names == ("tench", "goldfish", "Chihuahua")
    assert sorted(test.labels.tolist()) == sorted(val_labels) and len(test) == 6
    assert not any(p.name.endswith(".partial") for p in root.iterdir())  # unpacked through a staging folder
    out = tmp_path / "int8"
    status, report, err = _cli(capsys, "ptq", "resnet18", "--data", "torch/imagenet", "--data-dir", str(root),
                               "--image-size", "32", "--calib-images", "6", "--out", str(out))
    assert status == 0, err
    assert report["calibration_images"] == 6 and report["int8"]["images"] == 6
    assert json.loads((out / "config.json").read_text())["categories"] == ["tench", "goldfish", "Chihuahua"]
    status, evaluated, err = _cli(capsys, "eval", str(out), "--data", "torch/imagenet", "--data-dir", str(root))
    assert status == 0, err
    assert evaluated["acc1"] == report["int8"]["acc1"]
    assert {c["name"] for c in evaluated["weakest_classes"]} == {"tench", "goldfish", "Chihuahua"}


def test_imagenet_without_its_files_names_them_and_where_to_get_them(tmp_path, capsys):
    status, _, err = _cli(capsys, "eval", "resnet18", "--data", "torch/imagenet", "--data-dir", str(tmp_path))
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "ILSVRC2012_devkit_t12.tar.gz and ILSVRC2012_img_val.tar" in err
    assert "--data-dir" in err and "image-net.org" in err


def test_an_image_folder_with_a_class_list_reports_names_and_matches_imagenet_models(tmp_path):
    folder = tmp_path / "sample"
    for index, wnid in enumerate(WNIDS):
        (folder / wnid).mkdir(parents=True)
        (folder / wnid / "a.jpg").write_bytes(_jpeg(40 * index))
    (folder / "classes.json").write_text(json.dumps([{"index": i, "wnid": w, "name": n}
                                                     for i, (w, n) in enumerate(zip(WNIDS, ("tench", "goldfish", "Chihuahua")))]))
    images = ImageTensors.from_folder(folder, 16, cache=False, progress=False)
    assert images.classes == WNIDS and images.class_names == ("tench", "goldfish", "Chihuahua")
    qzoo.workflow.match_classes(images, ("tench", "goldfish", "Chihuahua"), "here")  # names match
    with pytest.raises(ValueError, match="has classes \\['tench', 'goldfish', 'Chihuahua'\\]"):
        qzoo.workflow.match_classes(images, ("a", "b", "c"), "here")
    (folder / "classes.json").write_text(json.dumps([{"index": 0, "wnid": WNIDS[1], "name": "x"}]))
    with pytest.raises(ValueError, match="does not list the 3 class folders"):
        ImageTensors.from_folder(folder, 16, cache=False, progress=False)


def test_a_subset_of_the_models_classes_is_labelled_by_the_models_indices(tmp_path):
    """Folders named as some of the model's classes (identifiers or a classes.json's names): each label
    becomes that class's index; a class the model lacks, or a name it uses twice, is refused by name."""
    labels = torch.tensor([0, 1, 1, 2])
    images = ImageTensors(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), labels, ("cat", "ship", "airplane"))
    cifar = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    matched = qzoo.workflow.match_classes(images, cifar, "here")
    assert matched.labels.tolist() == [3, 8, 8, 0] and matched.class_names == cifar
    named = ImageTensors(images.images, labels, WNIDS, ("goldfish", "tench", "Chihuahua"))
    matched = qzoo.workflow.match_classes(named, qzoo.pretrained.IMAGENET_CATEGORIES, "here")
    assert matched.labels.tolist() == [1, 0, 0, qzoo.pretrained.IMAGENET_CATEGORIES.index("Chihuahua")]
    with pytest.raises(ValueError, match=r"\['lorry'\] name none of its classes"):
        qzoo.workflow.match_classes(ImageTensors(images.images, labels, ("cat", "lorry", "ship")), cifar, "here")
    with pytest.raises(ValueError, match=r"\['crane'\] name none of its classes \(or more than one\)"):
        qzoo.workflow.match_classes(ImageTensors(images.images, labels, ("tench", "crane", "goldfish")),
                                    ("crane", "tench", "goldfish", "crane"), "here")  # a bird and a machine


def test_imagenet_models_match_wordnet_id_folders_by_index():
    wnids = tuple(f"n{index:08d}" for index in range(1000))
    images = ImageTensors(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64), wnids)
    qzoo.workflow.match_classes(images, qzoo.pretrained.IMAGENET_CATEGORIES, "here")  # sorted ids: class indices
    shuffled = ImageTensors(images.images, images.labels, (wnids[1], wnids[0], *wnids[2:]))
    with pytest.raises(ValueError, match="but the model predicts \\['tench'"):
        qzoo.workflow.match_classes(shuffled, qzoo.pretrained.IMAGENET_CATEGORIES, "here")
    with pytest.raises(ValueError):
        qzoo.workflow.match_classes(ImageTensors(images.images, images.labels, wnids[:999] + ("x",)),
                                    qzoo.pretrained.IMAGENET_CATEGORIES, "here")
