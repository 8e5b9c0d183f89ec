"""Weights entries as data: where each file lives, its hash, backend, metrics, recipe and transforms.

Names follow timm's ``architecture.tag`` style (``resnet18.imagenet1k_fbgemm_v1``,
``mobilenet_v2.cifar10_int8``). torchvision's published float and int8 checkpoints are
entries too, read from torchvision's own weights enums so they never drift from them.
Entries for files qzoo itself produces live in ``QZOO_ENTRIES`` and mirror the repository's
``weights/`` folder. This module downloads plain URLs (torchvision's files) and verifies
every file's sha256 on every load, cache hits included; Hugging Face hub files go through
``qzoo.hub``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch
from torchvision.models import WeightsEnum
from torchvision.models import mobilenetv2 as tv_mobilenetv2
from torchvision.models import resnet as tv_resnet
from torchvision.models.quantization import mobilenetv2 as tvq_mobilenetv2
from torchvision.models.quantization import resnet as tvq_resnet

from .serialization import IntegrityError

Mode = Literal["float", "int8"]
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Transforms:
    """The preprocessing a weights entry expects: resize, centre crop, then normalize."""

    crop_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


IMAGENET_TRANSFORMS = Transforms(224, 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR10_TRANSFORMS = Transforms(32, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@dataclass(frozen=True)
class Weights:
    """One weights file and everything needed to trust and use it."""

    name: str
    architecture: str
    mode: Mode
    sha256: str
    """Full 64-hex sha256, or the prefix a third party publishes (torchvision's file names)."""
    url: str | None = None
    hub_repo: str | None = None
    hub_filename: str = "model.safetensors"
    hub_revision: str | None = None
    """A pinned commit of ``hub_repo``; ``None`` while the entry is not published on the hub."""
    backend: str | None = None
    unquantized: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    categories: tuple[str, ...] = field(default=(), repr=False)
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    recipe: str = ""
    transforms: Transforms = IMAGENET_TRANSFORMS
    num_params: int = 0
    file_size_mb: float = 0.0
    license: str = ""
    default: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data (for ``qzoo info`` and model cards)."""
        data = dataclasses.asdict(self)
        data["kwargs"], data["metrics"] = dict(self.kwargs), {k: dict(v) for k, v in self.metrics.items()}
        return data


def _hash_prefix(url: str) -> str:
    """The sha256 prefix torchvision puts in its file names (``resnet18_fbgemm_16fa66dd.pth``)."""
    stem = Path(urllib.parse.urlparse(url).path).name.split(".")[0]
    match = re.search(r"[-_]([0-9a-f]{8,64})$", stem)
    if match is None:
        raise ValueError(f"{url} carries no sha256 prefix in its file name")
    return match.group(1)


def _from_torchvision(architecture: str, enum: type[WeightsEnum], mode: Mode) -> list[Weights]:
    entries = []
    for member in enum:
        meta = member.meta
        partial = member.transforms
        crop = partial.keywords.get("crop_size", 224)
        unquantized = meta.get("unquantized")
        entries.append(Weights(
            name=f"{architecture}.{member.name.lower()}",
            architecture=architecture,
            mode=mode,
            sha256=_hash_prefix(member.url),
            url=member.url,
            backend=meta.get("backend"),
            unquantized=f"{architecture}.{unquantized.name.lower()}" if unquantized is not None else None,
            kwargs={"num_classes": len(meta["categories"])},
            categories=tuple(meta["categories"]),
            metrics={data: {k.replace("@", ""): v for k, v in values.items()}
                     for data, values in meta["_metrics"].items()},
            recipe=meta["recipe"],
            transforms=dataclasses.replace(IMAGENET_TRANSFORMS, crop_size=crop,
                                           resize_size=partial.keywords.get("resize_size", 256)),
            num_params=meta["num_params"],
            file_size_mb=meta.get("_file_size", 0.0),
            license="BSD-3-Clause (torchvision); ImageNet terms of use",
            default=member is enum.DEFAULT,
        ))
    return entries


_TORCHVISION: tuple[tuple[str, type[WeightsEnum], type[WeightsEnum] | None], ...] = (
    ("resnet18", tv_resnet.ResNet18_Weights, tvq_resnet.ResNet18_QuantizedWeights),
    ("resnet34", tv_resnet.ResNet34_Weights, None),
    ("resnet50", tv_resnet.ResNet50_Weights, tvq_resnet.ResNet50_QuantizedWeights),
    ("resnet101", tv_resnet.ResNet101_Weights, None),
    ("resnet152", tv_resnet.ResNet152_Weights, None),
    ("resnext50_32x4d", tv_resnet.ResNeXt50_32X4D_Weights, None),
    ("resnext101_32x8d", tv_resnet.ResNeXt101_32X8D_Weights, tvq_resnet.ResNeXt101_32X8D_QuantizedWeights),
    ("resnext101_64x4d", tv_resnet.ResNeXt101_64X4D_Weights, tvq_resnet.ResNeXt101_64X4D_QuantizedWeights),
    ("wide_resnet50_2", tv_resnet.Wide_ResNet50_2_Weights, None),
    ("wide_resnet101_2", tv_resnet.Wide_ResNet101_2_Weights, None),
    ("mobilenet_v2", tv_mobilenetv2.MobileNet_V2_Weights, tvq_mobilenetv2.MobileNet_V2_QuantizedWeights),
)

INDEX = Path(__file__).with_name("weights.json")
"""Entries for weights qzoo produces (written by ``tools/publish.py``); each has a folder of the
same name under the repository's ``weights/``, laid out like the hub repository it goes to."""


def _qzoo_entries() -> list[Weights]:
    if not INDEX.is_file():
        return []
    entries = []
    for data in json.loads(INDEX.read_text()):
        data = dict(data, transforms=Transforms(**{k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in data["transforms"].items()}),
                    categories=tuple(data.get("categories", ())))
        entries.append(Weights(**data))
    return entries


def _all_entries() -> Mapping[str, Weights]:
    entries: list[Weights] = []
    for architecture, float_enum, int8_enum in _TORCHVISION:
        entries += _from_torchvision(architecture, float_enum, "float")
        if int8_enum is not None:
            entries += _from_torchvision(architecture, int8_enum, "int8")
    entries += _qzoo_entries()
    return MappingProxyType({entry.name: entry for entry in entries})


ENTRIES: Mapping[str, Weights] = _all_entries()


def architecture_of(float_enum: type[WeightsEnum]) -> str:
    """The qzoo architecture name whose float weights come from torchvision's ``float_enum``."""
    for architecture, enum, _ in _TORCHVISION:
        if enum is float_enum:
            return architecture
    raise KeyError(f"{float_enum.__name__} is not an enum qzoo builds from")


def list_weights(architecture: str | None = None, mode: Mode | None = None) -> list[str]:
    """Names of the weights entries, optionally only those of one architecture and/or mode."""
    return sorted(name for name, entry in ENTRIES.items()
                  if architecture in (None, entry.architecture) and mode in (None, entry.mode))


def get_weights(name: str) -> Weights:
    """The entry called ``name``; an unknown name lists the architecture's entries."""
    if name in ENTRIES:
        return ENTRIES[name]
    architecture = name.split(".")[0]
    known = ", ".join(list_weights(architecture)) or "none (see qzoo.weights.list_weights())"
    raise ValueError(f"unknown weights {name!r}; entries for {architecture!r}: {known}")


def int8_weights(architecture: str, weights: str | None, backend: str | None) -> Weights:
    """The int8 entry a ``quantize=True`` factory call means: named, or the default for ``backend``.

    Defaults come from torchvision's ImageNet files (the factories' own 1000-class heads);
    qzoo's other entries are chosen by name (``qzoo.from_pretrained("resnet18.cifar10_int8_ptq")``).
    """
    candidates = [ENTRIES[n] for n in list_weights(architecture, "int8") if ENTRIES[n].url is not None]
    if weights not in (None, "DEFAULT"):
        name = weights if "." in weights else f"{architecture}.{weights.lower()}"
        entry = get_weights(name)
        if entry.architecture != architecture or entry.mode != "int8":
            raise ValueError(f"{name} are {entry.mode} weights of {entry.architecture}; quantize=True with "
                             f"{architecture} takes one of: {', '.join(e.name for e in candidates) or 'none'}; to "
                             "quantize float weights yourself, build with prepare='ptq', calibrate and convert")
    else:
        if not candidates:
            raise ValueError(
                f"{architecture} has no pretrained int8 weights; make them: build with weights='DEFAULT', "
                "prepare='ptq', run qzoo.calibrate(model, batches) and qzoo.convert(model) (or `qzoo ptq`)")
        matching = [e for e in candidates if backend in (None, e.backend)]
        defaults = [e for e in matching if e.default] or matching
        if not defaults:
            have = ", ".join(sorted({str(e.backend) for e in candidates}))
            raise ValueError(f"{architecture} int8 weights exist for backend {have} only; pass backend="
                             f"{have.split(', ')[0]!r} or leave backend out")
        entry = defaults[0]
    if backend not in (None, entry.backend):
        raise ValueError(f"{entry.name} were quantized for backend {entry.backend!r}; int8 weights run only on "
                         f"the backend they were packed for: pass backend={entry.backend!r} or leave it out")
    return entry


# ----------------------------------------------------------------------------- files


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike[str], expected: str, *, fix: str) -> Path:
    """Check ``path`` against a full sha256 or a published prefix; ``fix`` says how to get a good copy."""
    actual = file_sha256(path)
    if not actual.startswith(expected.lower()):
        raise IntegrityError(f"{path} failed its integrity check: sha256 {actual}, expected "
                             f"{expected}{'' if len(expected) == 64 else '...'}; {fix}")
    return Path(path)


def _remove_stale_partials(folder: Path, name: str) -> None:
    """Delete partial downloads of ``name`` left by processes that died (ours, and torch.hub's inside them)."""
    owned = re.compile(rf"\.{re.escape(name)}\.(\d+)\.partial(\.[0-9a-f]+\.partial)?")
    for partial in folder.glob(f".{name}.*.partial"):
        match = owned.fullmatch(partial.name)
        if match and int(match[1]) != os.getpid() and not _alive(int(match[1])):
            partial.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fetch_url(entry: Weights, *, progress: bool = True) -> Path:
    """Download ``entry.url`` into torch.hub's checkpoint cache (if absent) and verify it, every time.

    The download lands in a process-private partial file that is verified before it is renamed
    into place, so a killed or concurrent download never leaves a file a later load accepts.
    """
    if entry.url is None:
        raise ValueError(f"{entry.name} is not a URL entry; load it with qzoo.from_pretrained({entry.name!r})")
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    filename = Path(urllib.parse.urlparse(entry.url).path).name
    target = folder / filename
    fix = f"delete {target} and load again to re-download it from {entry.url}"
    if target.is_file():
        return verify_file(target, entry.sha256, fix=fix)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(folder, filename)
    partial = folder / f".{filename}.{os.getpid()}.partial"
    try:
        torch.hub.download_url_to_file(entry.url, str(partial), progress=progress)
        verify_file(partial, entry.sha256, fix=f"the server sent a different file; try again later ({entry.url})")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def load_url_state(entry: Weights, *, progress: bool = True) -> dict[str, Any]:
    """The verified state_dict of a URL entry, read with ``torch.load(weights_only=True)``."""
    path = fetch_url(entry, progress=progress)
    try:
        with warnings.catch_warnings():  # torch's own storage internals, raised by every quantized checkpoint
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused something: never soften that into another error
        raise
    except Exception as error:  # a hash-verified file that torch cannot read is still damaged input
        raise IntegrityError(f"{path} could not be read as a checkpoint ({error}); delete it and load again") from None
