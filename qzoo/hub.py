"""Save, load and share qzoo models as folders: the only module that imports huggingface_hub.

A qzoo folder (local, or a Hugging Face hub repository) holds ``config.json`` (architecture,
keyword arguments, mode, backend, transforms, metrics), ``model.safetensors`` (float and QAT
states as plain tensors, int8 in qzoo's safetensors layout) and a ``README.md`` model card.
Downloads go through ``hf_hub_download`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``), and
every file is checked against the sha256 that ``config.json`` or the weights entry records.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any

import huggingface_hub
import huggingface_hub.errors
from huggingface_hub.errors import LocalEntryNotFoundError
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import quantization, registry, serialization
from ._files import IntegrityError, atomic_path, file_sha256, verify_file, write_atomic
from ._record import ModelRecord, record_of, update_record
from ._version import __version__
from .pretrained import HubRepo, LocalFolder, Source, Weights, resolve_source

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
MODES = ("float", "qat", "int8")


def model_mode(model: nn.Module) -> str:
    """``float``, ``qat`` or ``int8``: what a saved folder holds; a PTQ-prepared model is refused."""
    mode = record_of(model).mode
    if mode != "ptq":
        return mode
    raise ValueError("a PTQ-prepared model holds only observer statistics: run qzoo.calibrate and "
                     "qzoo.convert, then save the int8 model")


def _check_metadata(metadata: dict[str, Any]) -> None:
    """Refuse what the config could not hold (before anything is written, so a bad call leaves no half folder)."""
    metrics = metadata.get("metrics")
    if metrics is not None and not (isinstance(metrics, dict) and all(isinstance(v, dict) for v in metrics.values())):
        raise ValueError(f"metrics={metrics!r}: give {{data: {{metric: value}}}}, e.g. "
                         "metrics={'CIFAR-10': {'acc1': 91.2, 'acc5': 99.7}}")
    for key, value in metadata.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{key}: config.json holds plain JSON data (finite numbers, strings, lists, dicts), "
                             f"and this does not fit ({error}); convert it first (e.g. float(tensor))") from None


def check_categories(categories: Any, kwargs: dict[str, Any], where: str) -> None:
    """Refuse class names that do not fit the model: one name per class (``num_classes``, when given)."""
    classes = kwargs.get("num_classes")
    if categories and isinstance(classes, int) and len(categories) != classes:
        raise ValueError(f"{where}: {len(categories)} class names for a model of num_classes={classes}: give one "
                         "name per class, in class-index order")


def _config(model: nn.Module, metadata: dict[str, Any]) -> dict[str, Any]:
    _check_metadata(metadata)
    if getattr(model, "qzoo_not_saved", None):
        raise ValueError(model.qzoo_not_saved)
    record = record_of(model)
    architecture = record.architecture
    if architecture is None:
        raise ValueError("this model was not built by a qzoo factory, so no config can rebuild it: build it with "
                         "qzoo.get_model(name, ...) and load your weights into it (your own architecture: register "
                         "its factory with @qzoo.register_model first), or save its state_dict yourself")
    kwargs = dict(record.kwargs)
    try:
        json.dumps(kwargs)
    except TypeError:
        raise ValueError(f"the model's keyword arguments {kwargs} are not JSON data; only models built "
                         "from plain arguments (numbers, strings, lists) can be saved as a folder") from None
    check_categories(metadata.get("categories"), kwargs, "categories")
    mode = model_mode(model)
    kept = {"float_layers": list(record.float_layers)} if record.float_layers else {}
    if record.ptq_methods:
        kept["ptq_methods"] = list(record.ptq_methods)
    if record.float_logits:
        kept["float_logits"] = record.float_logits
    return {"library": "qzoo", "qzoo_version": __version__, "architecture": architecture, "kwargs": kwargs,
            "mode": mode, "backend": record.backend, "weights": record.weights, **kept, **metadata}


def _card(config: dict[str, Any]) -> str:
    name = config.get("name") or f"{config['architecture']} ({config['mode']})"
    metrics = config.get("metrics") or {}
    rows = "\n".join(f"| {data} | {values.get('acc1', '')} | {values.get('acc5', '')} |"
                     for data, values in metrics.items()) or "| (none recorded) | | |"
    load = ("qzoo.from_pretrained(\"<this repo or folder>\")")
    return f"""---
library_name: qzoo
tags: [image-classification, quantization, int8, pytorch]
license: {config.get("license") or "other"}
---

# {name}

A qzoo `{config['architecture']}` model in **{config['mode']}** form{
    f", quantized for the `{config['backend']}` backend" if config['mode'] == 'int8' else ''}.

```python
import qzoo
model = {load}
```

| data | acc@1 | acc@5 |
|---|---|---|
{rows}

- architecture arguments: `{json.dumps(config['kwargs'])}`
- preprocessing: `{json.dumps(config.get('transforms'))}`
- recipe: {config.get('recipe') or 'not recorded'}
- PTQ accuracy methods: {', '.join(config.get('ptq_methods') or ()) or 'none'}; layers kept float: {
    ', '.join(config.get('float_layers') or ()) or 'none'}{
    f"; float logits (unrounded output) from {config['float_logits']}" if config.get('float_logits') else ''}
- made from: {config.get('unquantized') or config.get('weights') or 'not recorded'}
- written by qzoo {config['qzoo_version']}; `model.safetensors` sha256 `{config['sha256']}`
"""


def save_pretrained(model: nn.Module, directory: str | os.PathLike[str], **metadata: Any) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a ``README.md`` card for ``model`` into ``directory``.

    ``metadata`` (``name``, ``metrics`` as ``{data: {metric: value}}``, ``transforms``, ``recipe``,
    ``categories``, ``license``, ...) goes into the config and the card; it must be plain JSON data
    (finite numbers), checked before anything is written. A card someone edited is never overwritten: the
    config remembers the hash of the card qzoo wrote, and only that exact card is replaced.
    """
    directory = Path(directory)
    config = _config(model, metadata)
    check_save_target(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # written under a private name and hashed before it takes the real one, so the config records
    # the bytes this call wrote even when another process saves into the same folder meanwhile
    header = {"architecture": config["architecture"], "kwargs": config["kwargs"], "mode": config["mode"]}
    with atomic_path(directory / WEIGHTS_NAME) as staged:
        if config["mode"] == "int8":
            serialization.save_int8(model, staged, architecture=config["architecture"], kwargs=config["kwargs"],
                                    backend=config["backend"])
        else:
            serialization.save_state(model, staged, backend=config["backend"], **header)
        config["sha256"] = file_sha256(staged)
    card_path, card = directory / CARD_NAME, _card(config)
    previous = _read_config(directory / CONFIG_NAME) if (directory / CONFIG_NAME).is_file() else {}
    if not card_path.exists() or file_sha256(card_path) == previous.get("card_sha256"):
        write_atomic(card_path, card)
        config["card_sha256"] = hashlib.sha256(card.encode()).hexdigest()
    else:
        config["card_sha256"] = previous.get("card_sha256")
    write_atomic(directory / CONFIG_NAME, json.dumps(config, indent=2, allow_nan=False) + "\n")
    return directory


def check_save_target(directory: Path) -> None:
    """Refuse to write a qzoo folder over files qzoo did not write: a ``config.json`` that is not a qzoo
    one, or a ``model.safetensors`` without one that lacks qzoo's header (a save interrupted between its
    two files leaves qzoo's weights without their config; the next save replaces them). Other files in
    the folder are left alone."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file, not a folder: choose a new or empty folder to save into")
    config, weights = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not (config.exists() or weights.exists()):
        return
    try:
        ours = json.loads(config.read_text()).get("library") == "qzoo"
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours and not config.exists():
        ours = serialization.is_qzoo_file(weights)
    if not ours:
        raise ValueError(f"{directory} holds a {CONFIG_NAME} or {WEIGHTS_NAME} that qzoo did not write; qzoo never "
                         "overwrites them: choose a new or empty folder")


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise IntegrityError(f"{path} is not valid JSON ({type(error).__name__}: {error})") from None
    if not isinstance(config, dict) or config.get("library") != "qzoo":
        raise ValueError(f"{path} is not a qzoo config (no \"library\": \"qzoo\"); write the folder with "
                         "qzoo.save_pretrained")
    missing = [key for key in ("architecture", "kwargs", "mode", "sha256") if key not in config]
    if missing or config["mode"] not in MODES or not _is_sha256(config["sha256"]):
        problem = (f"lacks {', '.join(missing)}" if missing
                   else f"has mode {config['mode']!r}, not one of {MODES}" if config["mode"] not in MODES
                   else f"has sha256 {config['sha256']!r}, not 64 hex digits")
        raise ValueError(f"{path} {problem}: it was damaged or edited; write it again with qzoo.save_pretrained")
    return config


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class _NoProgressBar(tqdm):
    """A tqdm that never draws: ``progress=False``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "disable": True})


HUB_TIMEOUT_S = 600.0
"""The most one hub file may take, whatever the server does (``$QZOO_HUB_TIMEOUT`` seconds sets another)."""


def _download(repo_id: str, filename: str, revision: str | None, progress: bool) -> Path:
    """``hf_hub_download`` under an overall deadline: a server that stalls or trickles cannot block forever.

    The download runs in a daemon thread; past the deadline the caller gets a ``TimeoutError`` and the
    thread is abandoned (its ``.incomplete`` file is never a cache hit, and every file is verified on use).
    """
    deadline = float(os.environ.get("QZOO_HUB_TIMEOUT") or HUB_TIMEOUT_S)
    outcome: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def fetch() -> None:
        try:
            outcome.put((True, huggingface_hub.hf_hub_download(
                repo_id, filename, revision=revision, library_name="qzoo", library_version=__version__,
                endpoint=os.environ.get("HF_ENDPOINT") or None, tqdm_class=tqdm if progress else _NoProgressBar)))
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread as it is
            outcome.put((False, error))

    threading.Thread(target=fetch, name=f"qzoo-hub-{filename}", daemon=True).start()
    try:
        done, value = outcome.get(timeout=deadline)
    except queue.Empty:
        raise TimeoutError(f"{repo_id}/{filename} did not arrive within {deadline:g} s; try again later, or set "
                           "QZOO_HUB_TIMEOUT to allow a slow link more time") from None
    if done:
        return Path(value)
    if isinstance(value, LocalEntryNotFoundError):
        raise FileNotFoundError(
            f"{repo_id}/{filename} is not in the Hugging Face cache and the hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE=1): connect once, or pre-download with "
            f"`hf download {repo_id}` and run again") from None
    raise value


def _discard_from_cache(path: Path) -> None:
    """Remove a downloaded file of a folder that failed verification: the snapshot link and its blob."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _locate(source: LocalFolder | HubRepo, progress: bool) -> tuple[Path, Path, str | None]:
    """Config path, weights path and the expected weights sha256 (an entry's) of a resolved folder source."""
    if isinstance(source, LocalFolder):
        return source.path / CONFIG_NAME, source.path / WEIGHTS_NAME, source.entry and source.entry.sha256
    repo_id, revision = source.repo_id, source.revision
    try:
        config = _download(repo_id, CONFIG_NAME, revision, progress)
        return config, _download(repo_id, WEIGHTS_NAME, revision, progress), source.entry and source.entry.sha256
    except huggingface_hub.errors.RevisionNotFoundError:
        raise FileNotFoundError(f"revision {revision!r} does not exist in {repo_id}: pass a branch, tag or commit "
                                "of that repository, or omit revision for the latest") from None
    except (huggingface_hub.errors.RepositoryNotFoundError, huggingface_hub.errors.EntryNotFoundError) as error:
        raise FileNotFoundError(f"{repo_id!r} is neither a folder, a weights entry (qzoo.list_weights()) nor a "
                                f"hub repository id like 'user/name' ({type(error).__name__})") from None


def _folder_source(source: str | os.PathLike[str] | Source, revision: str | None) -> LocalFolder | HubRepo:
    resolved = resolve_source(source, revision)
    if isinstance(resolved, Weights):
        raise ValueError(f"{resolved.name} is a single checkpoint file ({resolved.filename}), not a qzoo folder "
                         "with a config.json: load it with "
                         f"qzoo.from_pretrained({resolved.name!r})")
    return resolved


def read_config(source: str | os.PathLike[str] | Source, *, revision: str | None = None,
                progress: bool = True) -> dict[str, Any]:
    """The ``config.json`` of a qzoo folder, hub repository or weights entry name."""
    config_path, _, _ = _locate(_folder_source(source, revision), progress)
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path.parent} needs {CONFIG_NAME} and {WEIGHTS_NAME}; write such a "
                                "folder with qzoo.save_pretrained(model, folder)")
    return _read_config(config_path)


def from_pretrained(source: str | os.PathLike[str] | Source, *, revision: str | None = None,
                    progress: bool = True) -> nn.Module:
    """Rebuild the model a qzoo folder describes: a local directory, a weights entry (name) or a hub repo id.

    Float and int8 models come back in eval mode, ready for inference; QAT-prepared ones in train mode.

    The weights file is verified against the sha256 in ``config.json`` (and the weights entry's,
    for an entry) before it is read; a hub file that fails is removed from the cache. Entries
    for torchvision's files build through the model's factory (float, or ``quantize=True``).
    """
    resolved = resolve_source(source, revision)
    if isinstance(resolved, Weights):
        factory = registry.get_factory(resolved.architecture)
        return factory(quantize=resolved.mode == "int8", weights=resolved, progress=progress).eval()
    factory, config, weights_path = _verified_folder(resolved, source, progress)
    return _build(factory, config, weights_path)


def int8_parts(source: str | os.PathLike[str] | Source, *, revision: str | None = None,
               progress: bool = True) -> tuple[ModelRecord, dict[str, Tensor], dict[str, Any]]:
    """What an int8 qzoo folder (local, entry name or hub repo) holds, verified, as plain tensors: its
    record, the tensors and their entries (:func:`qzoo.serialization.read_int8_tensors`). Builds no
    model and makes no quantized tensor: for runtimes that take int8 as numbers (``qzoo.onnx_from_pretrained``)."""
    resolved = resolve_source(source, revision)
    if isinstance(resolved, Weights):
        raise ValueError(f"{source} is torchvision's file (a torch checkpoint of quantized tensors), not a qzoo folder: "
                         f"load it with qzoo.from_pretrained({str(source)!r}) and use qzoo.export_onnx(model)")
    _, config, weights_path = _verified_folder(resolved, source, progress)
    if config["mode"] != "int8":
        raise ValueError(f"{source} holds a {config['mode']} model, not int8: quantize it first (qzoo ptq)")
    header, tensors, entries = serialization.read_int8_tensors(weights_path)
    _check_same_model(header, config, weights_path)
    record = ModelRecord(architecture=config["architecture"], kwargs=config["kwargs"], weights=config.get("weights"),
                         backend=config.get("backend"), mode="int8",
                         float_layers=tuple(config.get("float_layers", ())),
                         float_logits=config.get("float_logits"), ptq_methods=tuple(config.get("ptq_methods", ())))
    return record, tensors, entries


def _verified_folder(resolved: LocalFolder | HubRepo, source: Any, progress: bool) -> tuple[Any, dict[str, Any], Path]:
    """A folder's factory, config and weights file, after every check ``from_pretrained`` makes before reading it."""
    config_path, weights_path, expected = _locate(resolved, progress)
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{Path(config_path).parent} needs {CONFIG_NAME} and {WEIGHTS_NAME}; "
                                "write such a folder with qzoo.save_pretrained(model, folder)")
    config = _read_config(config_path)
    try:
        factory = _checked_factory(config, weights_path)  # headers only: nothing large is read before this
        for digest in {d for d in (expected, config.get("sha256")) if d}:
            verify_file(weights_path, digest, fix=f"download or save {source} again")
    except IntegrityError:
        if isinstance(resolved, HubRepo):
            _discard_from_cache(weights_path)
            _discard_from_cache(config_path)
        raise
    return factory, config, weights_path


def _checked_factory(config: dict[str, Any], path: Path) -> Any:
    """The factory ``config`` names, after building its model on the meta device (no memory).

    config.json is not covered by any hash, so its kwargs are checked before anything is
    allocated: they must build the architecture, and into a model no larger than the file
    (an edited ``num_classes`` of 10**9 would otherwise allocate hundreds of gigabytes).
    The file, read from its header alone, must not be much larger than the model either: a
    hash only proves the bytes are the ones published, and reading a 1 GiB file that cannot
    fit would cost twice that in memory before the shapes refuse it.
    """
    architecture, kwargs = config["architecture"], config["kwargs"]
    try:
        factory = registry.get_factory(architecture)
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs is a {type(kwargs).__name__}, not an object")
        workflow_keys = sorted(set(kwargs) & {"weights", "prepare", "quantize", "backend", "progress"})
        if workflow_keys:
            raise TypeError(f"kwargs may only hold architecture arguments, not {', '.join(workflow_keys)}")
        with torch.device("meta"):
            skeleton = factory(**kwargs)
        parameters = sum(p.numel() for p in skeleton.parameters())
        state_values = sum(t.numel() for t in skeleton.state_dict().values())
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, ArithmeticError) as error:
        raise ValueError(f"{path.parent / CONFIG_NAME}: architecture {architecture!r} with kwargs {kwargs!r} "
                         f"does not build ({error}); write the folder again with qzoo.save_pretrained") from None
    stored = serialization.stored_values(path)
    # int8 files drop folded BatchNorm parameters but add a scale and zero point per channel
    if parameters > 2 * stored + 1024:
        raise ValueError(f"{path.parent / CONFIG_NAME} describes a model of {parameters:,} parameters but "
                         f"{path.name} holds {stored:,} values: config.json was edited or belongs to another "
                         "model; write the folder again with qzoo.save_pretrained")
    # QAT files add observer state per output channel; nothing adds more than a few values per weight
    if stored > 4 * state_values + 65536:
        raise ValueError(f"{path} holds {stored:,} values but {architecture} with kwargs {kwargs!r} has "
                         f"{state_values:,}: the file belongs to another model and is not read; "
                         "write the folder again with qzoo.save_pretrained")
    return factory


def _check_same_model(header: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """The int8 file's own header must name the model config.json names."""
    for key in ("architecture", "kwargs", "backend"):
        if header.get(key) != config.get(key):
            raise IntegrityError(f"{path} was written for {key}={header.get(key)!r} but config.json says "
                                 f"{config.get(key)!r}: the folder mixes files of two models")


def _build(factory: Any, config: dict[str, Any], path: Path) -> nn.Module:
    kwargs, mode, backend = dict(config["kwargs"]), config["mode"], config.get("backend")
    if mode == "int8":
        header, state = serialization.read_int8(path)
        _check_same_model(header, config, path)
        model = quantization.int8_skeleton(factory(**kwargs), backend or quantization.DEFAULT_BACKEND,
                                           float_layers=config.get("float_layers", ()),
                                           float_logits_layer=config.get("float_logits"))
        serialization.load_int8_state(model, state, str(path))
    else:
        model = factory(**kwargs).eval()
        if mode == "qat":
            quantization.prepare_qat(model, backend or quantization.DEFAULT_BACKEND,
                                     float_layers=config.get("float_layers", ()))
        serialization.load_state(model, path)
    if config.get("weights"):
        update_record(model, weights=config["weights"])
    if config.get("ptq_methods"):
        update_record(model, ptq_methods=tuple(config["ptq_methods"]))
    return model


def push_to_hub(model: nn.Module, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str = "Upload qzoo model", **metadata: Any) -> str:
    """Save ``model`` as a qzoo folder and upload it to the hub repository ``repo_id``; returns the commit URL.

    The folder is written first, so a model or metadata that cannot be saved creates no repository."""
    api = huggingface_hub.HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token,
                                library_name="qzoo", library_version=__version__)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder, **metadata)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    return str(info)
