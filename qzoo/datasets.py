"""Data sets by name, as timm's scripts take them: ``torch/cifar10``, ``torch/cifar100``, ``torch/imagenet``.

torchvision's own code finds, downloads (its URL, progress bar and checksums) and unpacks each one
into a root folder (``--data-dir``; default ``<qzoo cache>/datasets/torch``); qzoo then reads the
files itself: CIFAR's pickled batches through an unpickler that rebuilds numpy arrays and nothing
else (torchvision's reader would run any pickle), after torchvision's md5 check of every file.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import os
import pickle
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torchvision import datasets as tv_datasets
from torchvision.datasets import imagenet as tv_imagenet
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from . import _files
from .data import ImageTensors, default_cache_dir

PREFIX = "torch/"
_CIFAR = {"torch/cifar10": (tv_datasets.CIFAR10, "labels"), "torch/cifar100": (tv_datasets.CIFAR100, "fine_labels")}
NAMES = (*_CIFAR, "torch/imagenet")
IMAGENET_DOWNLOADS = "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php"


def is_dataset_name(data: str | os.PathLike[str]) -> bool:
    """Whether ``--data`` names a data set (``torch/...``) rather than a folder or an archive."""
    return isinstance(data, str) and data.lower().startswith(PREFIX) and not Path(data).exists()


def default_root() -> Path:
    """Where named data sets live unless ``--data-dir`` says otherwise: ``<qzoo cache>/datasets/torch``."""
    return default_cache_dir() / "datasets" / "torch"


def _checked_name(name: str) -> str:
    key = name.lower()
    if key not in NAMES:
        raise ValueError(f"--data {name}: qzoo knows the data sets {', '.join(NAMES)}; for anything else pass an "
                         "ImageFolder, a folder holding train/ and test/ ImageFolders, or a .tar.gz of one")
    return key


def load_split(name: str, split: str, size: int, *, resize: int | None = None, interpolation: str = "bilinear",
               root: str | os.PathLike[str] | None = None, sample: int | None = None, seed: int = 0,
               progress: bool = True) -> ImageTensors:
    """The ``train`` or ``test`` split of the data set ``name``, decoded to ``size`` x ``size`` as
    :meth:`ImageTensors.from_folder` decodes (``test`` is ImageNet's validation set); with ``sample``,
    a class-balanced pick of that many images (:func:`qzoo.data.balanced_indices`, ``seed``)."""
    key = _checked_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: choose 'train' or 'test'")
    folder = Path(root).expanduser() if root is not None else default_root()
    if key in _CIFAR:
        images = _read_cifar(key, folder, split, size, resize, interpolation, progress)
        return images if sample is None else images.balanced_sample(min(sample, len(images)), seed=seed)
    dataset = _imagenet(folder, "train" if split == "train" else "val")
    images = ImageTensors.from_folder(dataset.split_folder, size, resize=resize, interpolation=interpolation,
                                      sample=sample, seed=seed, progress=progress)
    return dataclasses.replace(images, names=tuple(synonyms[0] for synonyms in dataset.classes))


def dataset_classes(name: str, root: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """The class identifiers of the data set ``name`` (fetched first where torchvision can fetch it)."""
    key = _checked_name(name)
    folder = Path(root).expanduser() if root is not None else default_root()
    if key in _CIFAR:
        return _cifar_classes(key, _cifar_folder(key, folder))
    return tuple(_imagenet(folder, "val").wnids)


# ---------------------------------------------------------------------------------------- CIFAR


def _cifar_folder(key: str, root: Path) -> Path:
    """The unpacked CIFAR batches under ``root``, downloaded by torchvision when any file is missing or
    fails its md5; offline, one error naming ``--data-dir`` and the download."""
    dataset, _ = _CIFAR[key]
    folder = root / dataset.base_folder
    files = [*dataset.train_list, *dataset.test_list, (dataset.meta["filename"], dataset.meta["md5"])]
    if all(check_integrity(str(folder / file), md5) for file, md5 in files):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torchvision prints "Extracting ..." on stdout: keep --json clean
            download_and_extract_archive(dataset.url, str(root), filename=dataset.filename, md5=dataset.tgz_md5)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a failed checksum a RuntimeError
        raise FileNotFoundError(
            f"--data {key}: not in --data-dir {root}, and the download of {dataset.url} failed "
            f"({' '.join(str(error).split())}): rerun with internet access, or fetch that file on another "
            f"machine and put it in the --data-dir folder (qzoo checks and unpacks it)") from None
    failed = [file for file, md5 in files if not check_integrity(str(folder / file), md5)]
    if failed:
        raise _files.IntegrityError(f"--data {key}: {', '.join(failed)} in {folder} fail torchvision's md5 after "
                                    f"unpacking {dataset.filename}: delete {folder} and {root / dataset.filename} "
                                    "and rerun")
    return folder


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings and numpy arrays; any other global (code to run) is refused."""

    _multiarray = getattr(np, "_core", None) or np.core
    _allowed = {("numpy.core.multiarray", "_reconstruct"): _multiarray.multiarray._reconstruct,
                ("numpy._core.multiarray", "_reconstruct"): _multiarray.multiarray._reconstruct,
                ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                ("_codecs", "encode"): codecs.encode}  # how Python 3 pickles bytes for protocol 2

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR batch")


def _read_batch(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return _ArrayUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a CIFAR batch ({error}): delete it and rerun to fetch it again") from None


def _cifar_classes(key: str, folder: Path) -> tuple[str, ...]:
    dataset, _ = _CIFAR[key]
    return tuple(_read_batch(folder / dataset.meta["filename"])[dataset.meta["key"]])


def _read_cifar(key: str, root: Path, split: str, size: int, resize: int | None, interpolation: str,
                progress: bool) -> ImageTensors:
    dataset, label_key = _CIFAR[key]
    folder = _cifar_folder(key, root)
    batches = [_read_batch(folder / file) for file, _ in (dataset.train_list if split == "train" else dataset.test_list)]
    pixels = np.concatenate([batch["data"] for batch in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = [label for batch in batches for label in batch[label_key]]
    return ImageTensors.from_pixels(pixels, labels, _cifar_classes(key, folder), size, resize=resize,
                                    interpolation=interpolation, progress=progress)


# ---------------------------------------------------------------------------------------- ImageNet


def _imagenet(root: Path, split: str) -> tv_datasets.ImageNet:
    """torchvision's ImageNet over ``root``: it parses the devkit and unpacks the split's archive once
    (here into a staging folder renamed into place, so an interrupted unpacking is redone, not used)."""
    archive = tv_imagenet.ARCHIVE_META[split][0]
    needed = f"{tv_imagenet.ARCHIVE_META['devkit'][0]} and {archive}"
    try:
        if not (root / tv_imagenet.META_FILE).is_file():
            tv_imagenet.parse_devkit_archive(str(root))
        if not (root / split).is_dir():
            with _staging(root / split) as staging:
                parse = tv_imagenet.parse_train_archive if split == "train" else tv_imagenet.parse_val_archive
                parse(str(root), folder=staging.name)
        return tv_datasets.ImageNet(str(root), split=split)
    except ModuleNotFoundError as error:
        raise RuntimeError(f"--data torch/imagenet: reading ImageNet's devkit needs {error.name}: "
                           "pip install 'qzoo[imagenet]'") from None
    except RuntimeError as error:  # torchvision: an archive missing or failing its md5
        raise FileNotFoundError(
            f"--data torch/imagenet needs {needed} in --data-dir {root} ({' '.join(str(error).split())}): "
            f"torchvision cannot download ImageNet; get the files from {IMAGENET_DOWNLOADS} (free registration) "
            "and put them in that folder") from None


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A fresh sibling folder to fill, renamed to ``target`` when the block finishes and removed when it fails."""
    staging = _files.partial_path(target)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
