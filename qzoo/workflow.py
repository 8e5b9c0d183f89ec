"""The jobs behind the CLI: load a model and its data, PTQ, QAT, evaluate, benchmark, export.

Each ``run_*`` function is one CLI command: it takes the command's plain arguments, derives
what the data implies (class count, the QAT schedule, the distributed setup) and returns a
JSON-ready report, so the CLI only parses and prints. ``ptq``, ``qat``, ``bench`` and
``evaluate_model`` take an already loaded model, for scripts and tools.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import io
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import datasets, hub, onnx_export, quantization, sensitivity, serialization, train
from ._files import write_atomic
from ._record import record_of
from .benchmark import interleaved_latency_ms, page_faults_per_call, torch_threads
from .data import (IMAGE_SUFFIXES, ImageTensors, decode_image, image_folder_classes, images_in, is_archive,
                   synthetic_images, unpack_archive)
from ._tracing import tracing_warnings_silenced
from .inference import optimize_for_inference
from .pretrained import (CIFAR10_TRANSFORMS, CIFAR100_TRANSFORMS, IMAGENET_CATEGORIES, IMAGENET_TRANSFORMS,
                         Transforms, Weights, get_weights, list_models, list_weights, resolve_float,
                         resolve_source)
from .ptq import quantize
from .registry import get_factory, model_spec


@dataclass
class Loaded:
    """A model with what is known about its inputs: preprocessing and class names."""

    model: nn.Module
    transforms: Transforms | None
    categories: tuple[str, ...]
    source: str


def load_model(source: str, *, weights: str | None = None, num_classes: int | None = None,
               progress: bool = True) -> Loaded:
    """A model name (float, ``weights`` naming a float entry), a weights entry name, or a qzoo folder or hub repo."""
    if source in list_models():
        kwargs: dict[str, Any] = {} if num_classes is None or weights else {"num_classes": num_classes}
        entry = None
        if weights:
            entry = resolve_float(model_spec(source), weights)
        if entry is not None and not entry.is_file:
            model = hub.from_pretrained(entry, progress=progress)
        else:
            model = get_factory(source)(weights=entry, progress=progress, **kwargs).eval()
        return Loaded(model, entry.transforms if entry else None, entry.categories if entry else (), source)
    if weights:
        raise ValueError(f"--weights {weights} picks float weights for a model name, but {source} brings its own "
                         "weights (a folder, weights entry or hub repository): drop --weights")
    resolved = resolve_source(source)  # once: the config and the weights come from the same place
    if isinstance(resolved, Weights):  # an entry for a checkpoint file (torchvision's, a package's): no config
        return Loaded(hub.from_pretrained(resolved, progress=progress), resolved.transforms, resolved.categories,
                      str(source))
    config = hub.read_config(resolved, progress=progress)
    hub.check_categories(config.get("categories"), config.get("kwargs") or {}, f"{Path(str(source)) / hub.CONFIG_NAME}")
    model = hub.from_pretrained(resolved, progress=progress)
    transforms = _config_transforms(config["transforms"], source) if config.get("transforms") else None
    return Loaded(model, transforms, tuple(config.get("categories") or ()), str(source))


def _config_transforms(data: Any, source: str) -> Transforms:
    """The ``transforms`` block of a folder's config, checked: sizes positive, three finite means and stds."""
    try:
        transforms = Transforms(crop_size=int(data["crop_size"]), resize_size=int(data["resize_size"]),
                                mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]),
                                interpolation=str(data.get("interpolation", "bilinear")))
        values = (*transforms.mean, *transforms.std)
        if (transforms.crop_size < 1 or transforms.resize_size < 1 or len(transforms.mean) != 3
                or len(transforms.std) != 3 or not all(math.isfinite(v) for v in values) or min(transforms.std) <= 0):
            raise ValueError("out of range")
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as error:
        raise ValueError(f"{source}: config.json has an unusable transforms block ({error}): it needs crop_size, "
                         "resize_size, and three means and positive stds; write the folder again with "
                         "qzoo.save_pretrained") from None
    return transforms


def data_root(data: str | os.PathLike[str], split: str) -> Path:
    """The ImageFolder to read: ``data/<split>`` when present, else ``data``; archives are unpacked first."""
    path = Path(data)
    if path.is_file() and is_archive(path):
        path = unpack_archive(path)
        children = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(children) == 1 and not (path / split).is_dir():  # an archive wrapping everything in one folder
            path = children[0]
    if not path.is_dir():
        problem = f"{path} is a file, not a data folder or archive" if path.exists() else f"no data folder at {path}"
        raise FileNotFoundError(f"{problem}: pass an ImageFolder (one sub-folder of images per class), a folder "
                                "holding train/ and test/ ImageFolders, or a .tar.gz or .zip of one")
    if (path / split).is_dir():
        return path / split
    splits = sorted(name for name in ("train", "test", "val") if (path / name).is_dir())
    if splits:  # a split layout without this split: its folders are not classes
        raise FileNotFoundError(f"{path} holds {', '.join(s + '/' for s in splits)} but no {split}/: add a {split}/ "
                                f"ImageFolder, or point --data at one ImageFolder")
    return path


def load_images(data: str | os.PathLike[str], split: str, transforms: Transforms, categories: tuple[str, ...] = (),
                progress: bool = True, *, data_dir: str | os.PathLike[str] | None = None, sample: int | None = None,
                seed: int = 0) -> ImageTensors:
    """Decode a split of ``data`` (a folder, an archive, or a data set name such as ``torch/cifar10`` kept
    in ``data_dir``) with ``transforms``; with ``sample``, only a seeded class-balanced pick of that many
    images, labelled by the model's class indices (:func:`match_classes`, which refuses other classes)."""
    if datasets.is_dataset_name(data):
        images = datasets.load_split(str(data), split, transforms.crop_size, resize=transforms.resize_size,
                                     interpolation=transforms.interpolation, root=data_dir, sample=sample, seed=seed,
                                     progress=progress)
        return match_classes(images, categories, str(data))
    root = data_root(data, split)
    images = ImageTensors.from_folder(root, transforms.crop_size, resize=transforms.resize_size,
                                      interpolation=transforms.interpolation, sample=sample, seed=seed,
                                      progress=progress)
    return match_classes(images, categories, str(root))


def _is_imagenet_1k(classes: tuple[str, ...]) -> bool:
    return len(classes) == 1000 and list(classes) == sorted(classes) and all(
        len(c) == 9 and c[0] == "n" and c[1:].isdigit() for c in classes)


def match_classes(images: ImageTensors, categories: tuple[str, ...], where: str) -> ImageTensors:
    """``images`` labelled by the model's class indices: the data's classes are the model's ``categories``
    (their identifiers or names), torchvision's ImageNet-1k names for the 1,000 WordNet ids in sorted order
    (torchvision's list is indexed so), or a subset of the model's classes named as the model names them
    (each label then becomes that class's index). Anything else is refused, naming the classes that match
    none of the model's."""
    if not categories or tuple(categories) in (images.classes, images.names):
        return images
    if tuple(categories) == IMAGENET_CATEGORIES and _is_imagenet_1k(images.classes):
        return images
    counts = collections.Counter(categories)
    index = {name: i for i, name in enumerate(categories) if counts[name] == 1}
    unmatched = list(images.class_names)
    for keys in (images.classes, images.names):
        if keys and all(key in index for key in keys):
            mapping = torch.tensor([index[key] for key in keys], dtype=torch.int64)
            return ImageTensors(images.images, mapping[images.labels], tuple(categories))
        if keys:
            unmatched = [key for key in keys if key not in index]
    raise ValueError(f"{where} has classes {list(images.class_names)[:5]}... but the model predicts "
                     f"{list(categories)[:5]}...: {unmatched[:5]} name none of its classes (or more than one); name "
                     "each class folder as one of the model's classes (a subset is fine), or give the names in a "
                     "classes.json beside them")


def _transforms_for(loaded: Loaded, image_size: int | None) -> Transforms:
    if image_size:
        base = loaded.transforms or IMAGENET_TRANSFORMS
        return dataclasses.replace(base, crop_size=image_size, resize_size=image_size)
    return loaded.transforms or IMAGENET_TRANSFORMS


# Evaluation batches hold at most this many pixels per channel: 4 images of 224x224, 100 of 32x32. glibc's malloc
# maps every block over 32 MB afresh and unmaps it when freed, so a forward pass whose activations pass that size
# faults all their pages in again on every call (MobileNetV2's 96 x 112 x 112 float maps pass it at 7 images of
# 224x224). What 4 at a time is worth against larger batches: docs/benchmarks.md, the allocator table.
EVAL_BATCH_PIXELS = 4 * 224 * 224


def evaluation_batch_size(image_size: int) -> int:
    """Images per evaluation batch at ``image_size``: as many as :data:`EVAL_BATCH_PIXELS` allows, 1 to 100."""
    return max(1, min(100, EVAL_BATCH_PIXELS // (image_size * image_size)))


def _batches(images: ImageTensors, transforms: Transforms, batch_size: int | None = None) -> Any:
    """Normalized batches of ``images``; by default sized for evaluation by :func:`evaluation_batch_size`."""
    size = batch_size or evaluation_batch_size(images.images.shape[-1])
    return images.batches(size, mean=transforms.mean, std=transforms.std)


def evaluate_model(loaded: Loaded, data: str, *, image_size: int | None = None, split: str = "test",
                   data_dir: str | os.PathLike[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Top-1 / top-5 accuracy of a loaded model on a split of ``data``, and its weakest classes by name."""
    transforms = _transforms_for(loaded, image_size)
    images = load_images(data, split, transforms, loaded.categories, progress, data_dir=data_dir)
    metrics = train.evaluate(loaded.model, _batches(images, transforms), progress=progress, desc="eval",
                             num_classes=len(images.classes))
    names = loaded.categories or images.class_names
    ranked = sorted((100.0 * correct / seen, index) for index, (correct, seen) in enumerate(metrics.pop("per_class"))
                    if seen)
    return {"source": loaded.source, "data": describe_data(data, split), **metrics,
            "weakest_classes": [{"index": index, "name": names[index], "acc1": acc1} for acc1, index in ranked[:5]]}


def _file_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as folder:
        return (hub.save_pretrained(model, folder) / hub.WEIGHTS_NAME).stat().st_size


def _dataset_name(data: str | os.PathLike[str]) -> str:
    if datasets.is_dataset_name(data):
        return str(data).lower()
    path = Path(data)
    return path.name.split(".")[0] if path.is_file() else path.resolve().name


def describe_data(data: str | os.PathLike[str], split: str) -> str:
    """Where a split was read from, for reports: the ImageFolder, or the data set name and split."""
    return f"{str(data).lower()} ({split})" if datasets.is_dataset_name(data) else str(data_root(data, split))


def split_is_held_out(data: str | os.PathLike[str]) -> bool:
    """False when ``data`` is one ImageFolder without ``train/`` and ``test/``: then the images a command
    calibrates or trains on are among those it evaluates, and its accuracy is not a held-out figure."""
    return datasets.is_dataset_name(data) or data_root(data, "train") != data_root(data, "test")


def _same_place(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()


def check_output_folder(out: str | os.PathLike[str], source: str, *, overwrite: bool = False,
                        resumable: bool = False) -> Path:
    """The rule for every command that writes a qzoo folder, checked before any work.

    ``out`` must be new or empty (with ``resumable``, it may hold the ``training/`` checkpoint of a
    run to resume); with ``overwrite`` it may hold a qzoo folder, which is replaced. It may never be
    the source folder itself, a file, or a folder of someone else's ``config.json``/``model.safetensors``.
    """
    path = Path(out)
    if Path(source).is_dir() and _same_place(path, Path(source)):
        raise ValueError(f"--out {path} is the source folder: the new model would replace the one it is made "
                         "from; choose another --out")
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file; give a folder (new or empty)")
    contents = {p.name for p in path.iterdir()} if path.is_dir() else set()
    if contents and not (resumable and contents <= {"training"}):
        if not overwrite:
            raise ValueError(f"--out {path} is not empty; choose a new folder, or pass --overwrite "
                             "(overwrite=True) to replace the qzoo model in it")
        hub.check_save_target(path)
    return path


def check_output_file(out: str | os.PathLike[str], source: str, *, overwrite: bool = False) -> Path:
    """The rule for commands that write one file (export), checked before any work: ``out`` must be
    new (or, with ``overwrite``, an existing file), never a folder, never a file of the source folder."""
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a file name such as model.onnx")
    if Path(source).is_dir() and _same_place(path.parent, Path(source)):
        raise ValueError(f"--out {path} is inside the source folder {source}, whose files it could replace; "
                         "write the export somewhere else")
    if path.exists() and not overwrite:
        raise ValueError(f"--out {path} exists; choose a new file name, or pass --overwrite (overwrite=True)")
    return path


@dataclass(frozen=True)
class PtqOptions:
    """How ``qzoo ptq`` quantizes beyond the backend: :func:`qzoo.quantize`'s accuracy options."""

    float_layers: tuple[str, ...] = ()
    """Layers kept float in the int8 model (names as ``qzoo sensitivity`` prints them)."""
    weight_scheme: str = "per_channel"
    """``per_channel`` or ``per_tensor`` weight scales (:func:`qzoo.get_qconfig`)."""
    equalize: bool = False
    """Cross-layer equalization and high-bias absorption first (:mod:`qzoo.equalization`)."""
    bias_correction: bool = False
    """Empirical bias correction after calibration (:mod:`qzoo.bias_correction`)."""
    float_logits: bool = False
    """The output layer's sum left unrounded (:func:`qzoo.float_logits`): logits without ties."""

    def quantize_kwargs(self, backend: str) -> dict[str, Any]:
        """The matching keyword arguments of :func:`qzoo.quantize`."""
        return {"float_layers": self.float_layers, "equalize": self.equalize, "bias_correction": self.bias_correction,
                "float_logits": self.float_logits,
                "qconfig": quantization.get_qconfig(backend, weights=self.weight_scheme)}

    def flags(self) -> str:
        """The ``qzoo ptq`` flags that ask for these options (empty for the defaults)."""
        return "".join([f" --float-layers {','.join(self.float_layers)}" if self.float_layers else "",
                        " --per-tensor" if self.weight_scheme == "per_tensor" else "",
                        " --equalize" if self.equalize else "", " --bias-correction" if self.bias_correction else "",
                        " --float-logits" if self.float_logits else ""])


def ptq(loaded: Loaded, data: str, out: str | os.PathLike[str], *, backend: str = quantization.DEFAULT_BACKEND,
        calib_images: int = 512, seed: int = 0, image_size: int | None = None, dataset: str | None = None,
        recipe: str | None = None, data_dir: str | os.PathLike[str] | None = None,
        options: PtqOptions = PtqOptions(), overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Calibrate on a seeded class-balanced sample of the ``train`` split, convert, evaluate float and int8
    side by side on the ``test`` split, and save the int8 model as a qzoo folder in ``out``.

    ``dataset`` names the data in the saved metrics (default: the folder or archive name);
    ``recipe`` is the command recorded in the model card (default: the equivalent ``qzoo ptq``);
    ``data_dir`` holds named data sets (:func:`load_images`); ``options`` are the accuracy options
    (:class:`PtqOptions`); ``out`` follows :func:`check_output_folder`."""
    check_output_folder(out, loaded.source, overwrite=overwrite)
    transforms = _transforms_for(loaded, image_size)
    sample = load_images(data, "train", transforms, loaded.categories, progress, data_dir=data_dir,
                         sample=calib_images, seed=seed)
    test = load_images(data, "test", transforms, loaded.categories, progress, data_dir=data_dir)
    float_model = loaded.model.eval()
    int8 = quantize(float_model, _batches(sample, transforms, 32), backend=backend, progress=progress,
                    **options.quantize_kwargs(backend))
    float_metrics = train.evaluate(float_model, _batches(test, transforms), progress=progress, desc="eval fp32")
    int8_metrics = train.evaluate(int8, _batches(test, transforms), progress=progress, desc="eval int8")
    report = {"source": loaded.source, "backend": backend, "calibration_images": len(sample), "seed": seed,
              "float_layers": list(options.float_layers), "weight_scheme": options.weight_scheme,
              "ptq_methods": list(record_of(int8).ptq_methods), "float_logits": record_of(int8).float_logits,
              "float": float_metrics, "int8": int8_metrics,
              "float_file_bytes": _file_bytes(float_model), "int8_file_bytes": _file_bytes(int8),
              "held_out": split_is_held_out(data)}
    metrics = {dataset or _dataset_name(data): {k: int8_metrics[k] for k in ("acc1", "acc5")}}
    hub.save_pretrained(int8, out, metrics=metrics, transforms=dataclasses.asdict(transforms),
                        categories=list(loaded.categories or test.class_names), unquantized=loaded.source,
                        recipe=recipe or f"qzoo ptq {loaded.source} --calib-images {len(sample)} --seed {seed} "
                                         f"--backend {backend}{options.flags()}")
    report["out"] = str(out)
    return report


def bench(loaded: Loaded, *, image_size: int = 224, batches: tuple[int, ...] = (1, 16), repeats: int = 20,
          backend: str | None = None) -> dict[str, Any]:
    """fp32 vs int8 median latency side by side (interleaved calls) and file sizes.

    ``int8`` is qzoo's optimized path (:func:`qzoo.optimize_for_inference`), ``int8 eager`` the
    module itself, ``int8 onnxruntime`` the ONNX Runtime path when onnxruntime is installed; each batch
    size is timed on its own copy of the int8 model, first called at that size. A
    float source is quantized on synthetic images for timing; an int8 source is timed against the
    float model of the same architecture and arguments (weights do not change speed).
    """
    model = loaded.model.eval()
    if quantization.is_int8(model):
        int8 = model
        record = record_of(model)
        if record.architecture is None:
            raise ValueError("this int8 model was not built by a qzoo factory, so its float twin cannot be "
                             "built for the comparison: bench its float model instead")
        float_model = get_factory(record.architecture)(**record.kwargs).eval()
    else:
        float_model = model
        int8 = quantize(model, synthetic_images(8, image_size).split(4),
                        backend=backend or quantization.DEFAULT_BACKEND, progress=False)
    x = synthetic_images(max(batches), image_size, seed=5)
    on_ort = {}
    if onnx_export.available() and quantization.model_backend(int8) in onnx_export.ORT_BACKENDS:
        on_ort["int8 onnxruntime"] = optimize_for_inference(int8, x[:2], runtime="onnxruntime")
    latency = {}
    for batch in batches:
        # torch's x86 engine keeps its fast path for the first input shape and thread count each packed conv weight
        # sees: a fresh copy per batch size, first called at that size, times what a server of that size runs
        own = copy.deepcopy(int8)  # a qzoo model: copied under its own engine (QuantizableModel.__deepcopy__)
        runners = {"fp32": float_model, "int8": optimize_for_inference(own, x[:batch]), "int8 eager": own, **on_ort}
        latency[str(batch)] = interleaved_latency_ms(runners, x[:batch], repeats=repeats)
    return {"source": loaded.source, "backend": quantization.model_backend(int8), "image_size": image_size,
            "threads": torch.get_num_threads(), "latency_ms": latency,
            "speedup": {b: t["fp32"] / t["int8"] for b, t in latency.items()},
            "fp32_page_faults_per_call": {str(b): page_faults_per_call(float_model, x[:b]) for b in batches},
            "float_file_bytes": _file_bytes(float_model), "int8_file_bytes": _file_bytes(int8)}


def export(loaded: Loaded, out: str | os.PathLike[str], *, format: str = "torchscript",
           image_size: int = 224, overwrite: bool = False) -> dict[str, Any]:
    """Write an int8 model as qzoo's optimized TorchScript graph (checked bit-exact against the eager
    model; run it under the model's engine) or as ONNX (QDQ, for ONNX Runtime; :mod:`qzoo.onnx_export`).
    ``out`` follows :func:`check_output_file`."""
    check_output_file(out, loaded.source, overwrite=overwrite)
    model = loaded.model.eval()
    if not quantization.is_int8(model):
        raise ValueError(f"{loaded.source} is a {hub.model_mode(model)} model; export int8 models: run `qzoo ptq` "
                         "or `qzoo qat` first and export the folder they write")
    backend = quantization.model_backend(model)
    if format == "onnx":
        onnx_export.export_onnx(model, out)
        note = "run it with onnxruntime.InferenceSession or qzoo.OnnxRuntimeModel; input 'images'"
    elif format == "torchscript":
        buffer = io.BytesIO()
        with tracing_warnings_silenced():
            torch.jit.save(optimize_for_inference(model, image_size=image_size).graph, buffer)
        write_atomic(out, buffer.getvalue())
        note = (f"run it under torch.backends.quantized.engine = {backend!r}; checked bit-exact at "
                f"{image_size}x{image_size}")
    else:
        raise ValueError(f"format={format!r}: choose 'torchscript' or 'onnx'")
    return {"source": loaded.source, "format": format, "out": str(out), "backend": backend,
            "bytes": Path(out).stat().st_size, "note": note}


def qat(loaded: Loaded, data: str, out: str | os.PathLike[str], *, recipe: train.Recipe,
        backend: str = quantization.DEFAULT_BACKEND,
        image_size: int | None = None, dataset: str | None = None, command: str | None = None,
        data_dir: str | os.PathLike[str] | None = None, overwrite: bool = False, progress: bool = True,
        device: str | None = None, float_logits: bool = False) -> dict[str, Any]:
    """Quantization-aware fine-tuning of a float model on the ``train`` split (augmented), resumable from
    ``out/training``; evaluates float, and the converted int8 model after every epoch, on ``test``;
    saves the final int8 model as a qzoo folder in ``out``. Runs under torchrun unchanged; ``device``
    (``"cuda"``) trains there, while int8 models are converted and evaluated on the CPU.
    ``dataset`` and ``command`` name the data and the reproducing command in the model card; ``data_dir``
    holds named data sets (:func:`load_images`); ``out`` follows :func:`check_output_folder` (a ``training/``
    checkpoint in it is resumed). ``float_logits`` leaves the final int8 model's output layer unrounded (:func:`qzoo.float_logits`)."""
    check_output_folder(out, loaded.source, overwrite=overwrite, resumable=True)
    transforms = _transforms_for(loaded, image_size)
    train_set = load_images(data, "train", transforms, loaded.categories, progress, data_dir=data_dir)
    test = load_images(data, "test", transforms, loaded.categories, progress, data_dir=data_dir)
    if hub.model_mode(loaded.model) != "float":
        raise ValueError(f"{loaded.source} is already {hub.model_mode(loaded.model)}; QAT starts from a float model")
    float_metrics = train.evaluate(loaded.model, _batches(test, transforms), progress=progress, desc="eval fp32")
    model = quantization.prepare_qat(copy.deepcopy(loaded.model), backend)
    rank, world = train.rank_and_world()

    def epoch_batches(epoch: int) -> Any:
        return train_set.batches(recipe.batch_size, mean=transforms.mean, std=transforms.std, augment=True,
                                 shuffle=True, seed=epoch, rank=rank, world_size=world)

    identity = {"source": loaded.source, "float_sha256": serialization.state_digest(loaded.model), "backend": backend}
    history = train.fit(model, epoch_batches, recipe, Path(out) / "training", identity=identity,
                        evaluate_fn=lambda m: train.evaluate(m, _batches(test, transforms)), progress=progress,
                        device=device)
    int8 = train.int8_copy(model)
    if float_logits:
        quantization.float_logits(int8)
    int8_metrics = train.evaluate(int8, _batches(test, transforms), progress=progress, desc="eval int8")
    report = {"source": loaded.source, "backend": backend, "recipe": recipe.to_dict(), "float": float_metrics,
              "int8": int8_metrics, "history": history, "world_size": world, "rank": rank,
              "int8_sha256": serialization.state_digest(int8), "held_out": split_is_held_out(data),
              "trained_classes": int(train_set.labels.unique().numel()), "model_classes": len(train_set.classes)}
    if rank == 0:
        metrics = {dataset or _dataset_name(data): {k: int8_metrics[k] for k in ("acc1", "acc5")}}
        hub.save_pretrained(int8, out, metrics=metrics, transforms=dataclasses.asdict(transforms),
                            categories=list(loaded.categories or test.class_names), unquantized=loaded.source,
                            recipe=command or qat_command(loaded, recipe, float_logits))
        report.update(out=str(out), float_file_bytes=_file_bytes(loaded.model), int8_file_bytes=_file_bytes(int8))
    return report


def sensitivity_report(loaded: Loaded, data: str, *, images: int = 64, calib_images: int = 256, seed: int = 0,
                       backend: str = quantization.DEFAULT_BACKEND, image_size: int | None = None,
                       data_dir: str | os.PathLike[str] | None = None, plot: str | os.PathLike[str] | None = None,
                       max_drop: float | None = None, validation_images: int = 500,
                       progress: bool = True) -> dict[str, Any]:
    """PTQ-calibrate a copy of a float model on a seeded class-balanced sample of ``train``, then the
    per-layer sensitivity (:func:`qzoo.sensitivity.sensitivity`) on ``images`` test images; with
    ``plot``, also the PNG chart there. With ``max_drop`` (points of top-1), also the fewest layers to
    keep float for that drop on ``validation_images`` test images
    (:func:`qzoo.sensitivity.fewest_float_layers`), as ``report["target"]``."""
    if hub.model_mode(loaded.model) != "float":
        raise ValueError(f"{loaded.source} is already {hub.model_mode(loaded.model)}; the sensitivity report "
                         "starts from a float model")
    if plot:
        sensitivity.check_plotting()
    transforms = _transforms_for(loaded, image_size)
    calibration = load_images(data, "train", transforms, loaded.categories, progress, data_dir=data_dir,
                              sample=calib_images, seed=seed)
    test = load_images(data, "test", transforms, loaded.categories, progress, data_dir=data_dir, sample=images,
                       seed=seed)
    prepared = quantization.prepare_ptq(copy.deepcopy(loaded.model), backend)
    quantization.calibrate(prepared, _batches(calibration, transforms, 32), progress=progress)
    report = sensitivity.sensitivity(prepared, _batches(test, transforms), progress=progress)
    report.update(source=loaded.source, backend=backend, calibration_images=len(calibration),
                  data=describe_data(data, "test"), held_out=split_is_held_out(data))
    if max_drop is not None:
        validation = load_images(data, "test", transforms, loaded.categories, progress, data_dir=data_dir,
                                 sample=validation_images, seed=seed)
        report["target"] = sensitivity.fewest_float_layers(prepared, report, _batches(validation, transforms),
                                                           max_drop=max_drop, progress=progress)
    if plot:
        report["plot"] = str(sensitivity.plot(report, plot))
    return report


def qat_command(loaded: Loaded, recipe: train.Recipe, float_logits: bool = False) -> str:
    """The command line that reproduces a QAT run."""
    return (f"qzoo qat {loaded.source} --epochs {recipe.epochs} --lr {recipe.lr} --batch-size {recipe.batch_size} "
            f"--weight-decay {recipe.weight_decay}{' --float-logits' if float_logits else ''}")


# ----------------------------------------------------------------------------- one job per CLI command


_DATASET_TRANSFORMS = {"torch/cifar10": CIFAR10_TRANSFORMS, "torch/cifar100": CIFAR100_TRANSFORMS,
                       "torch/imagenet": IMAGENET_TRANSFORMS}


def _load_for(source: str, data: str, weights: str | None, data_dir: str | os.PathLike[str] | None,
              progress: bool) -> Loaded:
    """``source`` loaded for ``data``: a bare model name gets one output per class of ``data`` (and, for a
    named data set, that data set's usual preprocessing)."""
    if source not in list_models() or weights:
        return load_model(source, weights=weights, progress=progress)
    if datasets.is_dataset_name(data):
        loaded = load_model(source, num_classes=len(datasets.dataset_classes(data, data_dir)), progress=progress)
        loaded.transforms = _DATASET_TRANSFORMS.get(data.lower())
        return loaded
    return load_model(source, num_classes=len(image_folder_classes(data_root(data, "test"))), progress=progress)


def run_ptq(source: str, data: str, out: str | os.PathLike[str], *, weights: str | None = None,
            backend: str = quantization.DEFAULT_BACKEND, calib_images: int = 512, seed: int = 0,
            image_size: int | None = None, data_dir: str | os.PathLike[str] | None = None,
            options: PtqOptions = PtqOptions(), overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """``qzoo ptq``: check ``out``, load ``source`` for ``data`` and run :func:`ptq`."""
    check_output_folder(out, source, overwrite=overwrite)
    loaded = _load_for(source, data, weights, data_dir, progress)
    return ptq(loaded, data, out, backend=backend, calib_images=calib_images, seed=seed, image_size=image_size,
               data_dir=data_dir, options=options, overwrite=overwrite, progress=progress)


def run_qat(source: str, data: str, out: str | os.PathLike[str], *, weights: str | None = None, epochs: int = 2,
            lr: float = 0.005, batch_size: int = 128, weight_decay: float = 5e-5,
            backend: str = quantization.DEFAULT_BACKEND, image_size: int | None = None,
            data_dir: str | os.PathLike[str] | None = None, overwrite: bool = False, float_logits: bool = False,
            progress: bool = True) -> dict[str, Any]:
    """``qzoo qat``: check ``out``, join torchrun's process group (if any), load ``source`` for ``data``
    and run :func:`qat` with :meth:`train.Recipe.qat_finetune`."""
    check_output_folder(out, source, overwrite=overwrite, resumable=True)
    train.init_distributed()
    recipe = train.Recipe.qat_finetune(epochs, lr, batch_size=batch_size, weight_decay=weight_decay)
    loaded = _load_for(source, data, weights, data_dir, progress)
    return qat(loaded, data, out, recipe=recipe, backend=backend, image_size=image_size, data_dir=data_dir,
               overwrite=overwrite, progress=progress, float_logits=float_logits)


def run_eval(source: str, data: str, *, weights: str | None = None, image_size: int | None = None,
             data_dir: str | os.PathLike[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """``qzoo eval``: load ``source`` for ``data`` and run :func:`evaluate_model`."""
    return evaluate_model(_load_for(source, data, weights, data_dir, progress), data, image_size=image_size,
                          data_dir=data_dir, progress=progress)


def run_sensitivity(source: str, data: str, *, weights: str | None = None, images: int = 64,
                    calib_images: int = 256, seed: int = 0, backend: str = quantization.DEFAULT_BACKEND,
                    image_size: int | None = None, data_dir: str | os.PathLike[str] | None = None,
                    plot: str | os.PathLike[str] | None = None, max_drop: float | None = None,
                    validation_images: int = 500, progress: bool = True) -> dict[str, Any]:
    """``qzoo sensitivity``: load ``source`` for ``data`` and run :func:`sensitivity_report`."""
    return sensitivity_report(_load_for(source, data, weights, data_dir, progress), data, images=images,
                              calib_images=calib_images, seed=seed, backend=backend, image_size=image_size,
                              data_dir=data_dir, plot=plot, max_drop=max_drop, validation_images=validation_images,
                              progress=progress)


def run_bench(source: str, *, weights: str | None = None, image_size: int | None = None, repeats: int = 20,
              backend: str | None = None, threads: int | None = None, batches: tuple[int, ...] = (1, 16),
              progress: bool = True) -> dict[str, Any]:
    """``qzoo bench``: load ``source`` and run :func:`bench` at ``batches`` with ``threads`` intra-op threads
    (torch's and ONNX Runtime's; default: torch's current number), restored after."""
    loaded = load_model(source, weights=weights, progress=progress)
    with torch_threads(threads):
        return bench(loaded, image_size=image_size or 224, batches=batches, repeats=repeats, backend=backend)


def run_export(source: str, out: str | os.PathLike[str], *, weights: str | None = None, format: str = "torchscript",
               image_size: int | None = None, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """``qzoo export``: check ``out``, load ``source`` and run :func:`export` (TorchScript checked at
    ``image_size``, by default the model's own crop size; the ONNX graph takes any size)."""
    if image_size is not None and format == "onnx":
        raise ValueError("--image-size is for --format torchscript (checked at that size); the ONNX graph takes any "
                         "batch, height and width: drop --image-size")
    check_output_file(out, source, overwrite=overwrite)
    loaded = load_model(source, weights=weights, progress=progress)
    size = image_size or (loaded.transforms.crop_size if loaded.transforms else 224)
    return export(loaded, out, format=format, image_size=size, overwrite=overwrite)


PREDICT_DEFAULT = "efficientnet_lite0.imagenet1k_int8_ptq"
"""The model ``qzoo predict`` uses unless told otherwise: int8 EfficientNet-Lite0 (ImageNet's 1,000 classes)."""


def predict(loaded: Loaded, images: list[str], *, top: int = 5) -> list[dict[str, Any]]:
    """Classify image files with ``loaded``'s preprocessing: per file its ``top`` classes with
    probabilities, or the one-line ``error`` that kept it from being read (the others still run).
    A folder stands for the image files below it (sorted; hidden ones left out, as in data folders).
    Photos are turned upright by their EXIF orientation, as they are shown."""
    transforms = loaded.transforms or IMAGENET_TRANSFORMS
    mean, std = torch.tensor(transforms.mean).view(3, 1, 1), torch.tensor(transforms.std).view(3, 1, 1)
    results: list[dict[str, Any]] = []
    for path in _expand_folders(images):
        if Path(path).is_dir():
            suffixes = ", ".join(IMAGE_SUFFIXES)
            results.append({"image": path, "error": f"{path}: a folder without image files ({suffixes})"})
            continue
        if not Path(path).is_file():
            results.append({"image": path, "error": f"{path}: no such file"})
            continue
        try:
            pixels = decode_image(Path(path), transforms.crop_size, transforms.resize_size, transforms.interpolation,
                                  upright=True)
        except (ValueError, OSError) as error:
            results.append({"image": path, "error": " ".join(str(error).split())})
            continue
        with torch.inference_mode():
            logits = loaded.model(((pixels.float() / 255 - mean) / std).unsqueeze(0))[0]
        probabilities = logits.softmax(0)
        indices = train.top_classes(probabilities, top)
        values = probabilities[indices]
        names = loaded.categories or tuple(str(i) for i in range(probabilities.numel()))
        results.append({"image": path, "top": [{"index": int(i), "label": names[int(i)], "probability": float(v)}
                                               for v, i in zip(values, indices)]})
    return results


def _expand_folders(images: list[str]) -> list[str]:
    """Each folder among ``images`` replaced by the image files below it; an empty folder stays, to be reported."""
    expanded: list[str] = []
    for path in images:
        found = images_in(Path(path)) if Path(path).is_dir() else []
        expanded.extend([str(file) for file in found] or [path])
    return expanded


def run_predict(images: list[str], *, source: str = PREDICT_DEFAULT, top: int = 5,
                progress: bool = True) -> list[dict[str, Any]]:
    """``qzoo predict``: load ``source`` (a pretrained entry, folder or hub repository) and :func:`predict`."""
    if top < 1:
        raise ValueError(f"--top {top}: give 1 or more classes to show")
    if source in list_models():  # a bare architecture is built with random weights: its labels mean nothing
        entries = ", ".join(list_weights(source)) or "none yet"
        raise ValueError(f"--model {source} names an architecture, which has random weights: name a weights entry "
                         f"(its entries: {entries}), a qzoo folder or a hub repository")
    return predict(load_model(source, progress=progress), images, top=top)


def describe(name: str) -> dict[str, Any]:
    """``qzoo info``: a model's documentation and weights entries, or a weights entry's fields."""
    if name in list_models():
        spec = model_spec(name)
        return {"model": name, "family": spec.family, "doc": (spec.factory.__doc__ or "").strip(),
                "weights": list_weights(name)}
    entry = get_weights(name).to_dict()
    entry["categories"] = f"{len(entry['categories'])} classes"
    return entry
