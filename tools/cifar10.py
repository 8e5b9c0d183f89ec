"""The CIFAR-10 worked example, one command per step; every number in docs/cifar10.md comes from here.

    python tools/cifar10.py train resnet18 --device cuda  # float training from scratch (resumable; a GPU: bf16 autocast)
    python tools/cifar10.py train mobilenet_v2 --device cuda --compile reduce-overhead  # CUDA graphs for small models
    python tools/cifar10.py train resnet18 --device cuda --epochs 60 --cutout 16  # longer, with cutout
    python tools/cifar10.py train resnet18 --device cuda --epochs-within 420  # as many epochs as fit in 7 minutes
    python tools/cifar10.py ptq resnet18                  # calibrate on 512 seeded training images, evaluate on 10,000
    python tools/cifar10.py qat resnet18 --device cuda    # QAT from the float model (resumable; int8 evaluated on the CPU)
    python tools/cifar10.py bench resnet18        # fp32 vs int8 latency at batch 1 and 16, side by side
    python tools/publish.py                       # weights/ folders, qzoo/weights.json, results/cifar10.json, docs/cifar10.md

Runs go to ``runs/cifar10/<model>-<step>/``; rerun a step to resume it. Data: CIFAR-10 as
torchvision downloads it (``--data torch/cifar10``, the default, kept in ``--data-dir``), or any
ImageFolder / ``.tar.gz`` of one with CIFAR-10's class folders (``--data PATH``); each report
records which.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import qzoo
from qzoo import pretrained, train, workflow
from qzoo.benchmark import torch_threads
from qzoo.data import ImageTensors, TensorBatches

from _catalogue import allocator, cpu_name  # tools/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "torch/cifar10"
RUNS = ROOT / "runs" / "cifar10"

# 32x32 inputs: ResNet18 with the CIFAR stem (3x3 stride-1 conv, no max pool); MobileNetV2 with a
# stride-1 stem (the only change)
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet18": {"num_classes": 10, "stem": "cifar"},
    "mobilenet_v2": {"num_classes": 10, "stem_stride": 1},
}
FLOAT_RECIPES = {
    "resnet18": train.Recipe(epochs=30, lr=0.2, batch_size=256, weight_decay=5e-4, warmup_epochs=1,
                             label_smoothing=0.1),
    "mobilenet_v2": train.Recipe(epochs=8, lr=0.1, batch_size=128, weight_decay=4e-5, warmup_epochs=0.5),
}
QAT_RECIPE = train.Recipe(epochs=2, lr=0.002, batch_size=128, weight_decay=5e-5, freeze_observers_after=1,
                          freeze_bn_after=1)
CALIBRATION_IMAGES = 512


def load_split(split: str, data: str = DEFAULT_DATA, data_dir: str | None = None) -> ImageTensors:
    """The decoded CIFAR-10 ``train`` or ``test`` split of ``data`` (a data set name or a folder/archive)."""
    return workflow.load_images(data, split, pretrained.CIFAR10_TRANSFORMS, pretrained.CIFAR10_CLASSES,
                                data_dir=data_dir)


def _flags(data: str, device: str | None, compile_mode: str | None = None, epochs: int | None = None,
           cutout: int = 0, weight_decay: float | None = None) -> str:
    """How a run's data, device, compile mode and recipe changes appear in its recorded command: the data by
    file or folder name unless it is the default, the others when given."""
    given = {"--device": device, "--compile": compile_mode, "--epochs": epochs, "--cutout": cutout or None,
             "--weight-decay": weight_decay}
    return ("" if data == DEFAULT_DATA else f" --data {Path(data).name}") + "".join(
        f" {flag} {value}" for flag, value in given.items() if value is not None)


def float_folder(name: str) -> Path:
    return RUNS / f"{name}-float" / "model"


def train_float(name: str, data: str, data_dir: str | None, device: str | None, compile_mode: str | None,
                epochs: int | None = None, cutout: int = 0, weight_decay: float | None = None,
                epochs_within: float | None = None) -> None:
    """Train the float model from scratch with its recipe (``epochs``: that many instead; ``cutout``: erase a
    square of that side in each training image; ``weight_decay``: that instead; ``epochs_within``: as many
    epochs as fit in that many seconds from now, at most ``epochs``); resumable, and a checkpoint of other
    settings is refused. The recorded command names the epochs run."""
    started = time.perf_counter()
    torch.manual_seed(0)
    model = qzoo.get_model(name, **ARCHITECTURES[name])
    changes = {"epochs": epochs, "weight_decay": weight_decay}
    recipe = dataclasses.replace(FLOAT_RECIPES[name], **{k: v for k, v in changes.items() if v is not None})
    train_set, test = load_split("train", data, data_dir), load_split("test", data, data_dir)
    gpu = torch.device(device or "cpu").type == "cuda"
    speed = {"device": device, "bf16": gpu, "compile_mode": compile_mode, "channels_last": gpu}

    def epoch_batches(epoch: int) -> TensorBatches:
        return train_set.batches(recipe.batch_size, augment=True, shuffle=True, seed=epoch, cutout=cutout)

    def evaluate(m: torch.nn.Module) -> dict[str, Any]:
        return train.evaluate(m, test.batches(500))

    resumed = train.checkpoint_state(RUNS / f"{name}-float")
    if epochs_within is not None and resumed:  # a rerun resumes the run it sized, not a new size
        recipe = dataclasses.replace(recipe, epochs=resumed["recipe"]["epochs"])
        print(f"resuming a run of {recipe.epochs} epochs (its --epochs-within chose them)", flush=True)
    elif epochs_within is not None:
        recipe = dataclasses.replace(recipe, epochs=epochs_that_fit(model, recipe, epoch_batches, evaluate,
                                                                    started + epochs_within, epochs, speed))
    history = train.fit(model, epoch_batches, recipe, RUNS / f"{name}-float", evaluate_fn=evaluate,
                        identity={"cutout": cutout} if cutout else None, **speed)
    metrics = history[-1]["eval"]
    flags = _flags(data, device, compile_mode, recipe.epochs if epochs_within else epochs, cutout, weight_decay)
    qzoo.save_pretrained(model.cpu().eval(), float_folder(name), name=f"{name}.cifar10_float",
                         metrics={"CIFAR-10": {"acc1": metrics["acc1"], "acc5": metrics["acc5"]}},
                         transforms=dataclasses.asdict(pretrained.CIFAR10_TRANSFORMS),
                         categories=list(pretrained.CIFAR10_CLASSES),
                         recipe=f"python tools/cifar10.py train {name}{flags}",
                         license="BSD-3-Clause (qzoo); CIFAR-10 images (Krizhevsky, 2009)")
    print(json.dumps(history[-1]))


def epochs_that_fit(model: torch.nn.Module, recipe: train.Recipe, batches: Callable[[int], TensorBatches],
                    evaluate: Callable[[torch.nn.Module], Any], deadline: float, most: int | None,
                    speed: dict[str, Any], timed_steps: int = 30, margin: float = 1.15) -> int:
    """How many epochs of ``recipe`` end before ``deadline`` (a ``time.perf_counter()`` reading).

    Times ``timed_steps`` training steps of ``model`` (after untimed warm-up steps: autotuning, compilation) and one
    evaluation (the second of two), then counts whole epochs of that speed, each ``margin`` times longer (a GPU
    shared with another run slows down), after a second warm-up (the real run's). The model is left as it was; at
    most ``most`` epochs."""
    warmup_steps = 10
    plan = batches(0)
    every_epoch = itertools.chain.from_iterable(batches(epoch) for epoch in itertools.count())
    probe = itertools.islice(every_epoch, warmup_steps + timed_steps)
    warm_up, per_step = train.seconds_per_step(model, probe, recipe, warmup_steps=warmup_steps, **speed)
    evaluate(model)  # the first evaluation autotunes its own shapes: time the second
    clock = time.perf_counter()
    evaluate(model)
    epoch = (len(plan) * per_step + time.perf_counter() - clock) * margin
    fits = math.floor((deadline - time.perf_counter() - warm_up) / epoch)
    least = math.floor(recipe.warmup_epochs) + 1
    if fits < least:
        raise SystemExit(f"--epochs-within: an epoch takes about {epoch:.1f} s here (warm-up {warm_up:.1f} s), "
                         f"not even {least} fit in the time left; give more seconds")
    chosen = min(fits, most) if most else fits
    print(f"epochs within the time: {per_step * 1000:.1f} ms a step, an epoch about {epoch:.1f} s with evaluation "
          f"(x{margin} margin), warm-up {warm_up:.1f} s: {chosen} epochs", flush=True)
    return chosen


def quantize(name: str, step: str, data: str, data_dir: str | None, device: str | None) -> None:
    if not float_folder(name).is_dir():
        raise SystemExit(f"no float {name} at {float_folder(name)}: train it first "
                         f"(python tools/cifar10.py train {name})")
    loaded = workflow.load_model(str(float_folder(name)))
    out = RUNS / f"{name}-{step}"
    command = f"python tools/cifar10.py {step} {name}{_flags(data, device if step == 'qat' else None)}"
    loaded.source = f"{name}.cifar10_float"
    if step == "ptq":
        report = workflow.ptq(loaded, data, out / "model", calib_images=CALIBRATION_IMAGES, seed=0,
                              dataset="CIFAR-10", recipe=command, data_dir=data_dir, overwrite=True)
    else:
        report = workflow.qat(loaded, data, out / "model", recipe=QAT_RECIPE, dataset="CIFAR-10",
                              command=command, data_dir=data_dir, overwrite=True, device=device)
    report["data"] = data if data == DEFAULT_DATA else Path(data).name  # a name, not this machine's path
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("float", "int8")}))


def bench(name: str) -> None:
    out = RUNS / f"{name}-ptq"
    report = bench_report(out / "model")
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


def bench_report(folder: Path) -> dict[str, Any]:
    """fp32 vs int8 latency of an int8 CIFAR-10 folder on 32x32 images with 1 and 2 threads (``by_threads``), and
    where and how it was timed (``measured``): the speed-up columns of docs/cifar10.md's table, shared with
    ``tools/publish.py --rebench``."""
    loaded = workflow.load_model(str(folder))
    measured = {"date": datetime.date.today().isoformat(), "machine": cpu_name(), "cores": os.cpu_count(),
                "torch": torch.__version__, "allocator": allocator()}
    return {"measured": measured, "by_threads": {str(threads): _bench_threads(loaded, threads) for threads in (1, 2)}}


def _bench_threads(loaded: workflow.Loaded, threads: int) -> dict[str, Any]:
    with torch_threads(threads):
        return workflow.bench(loaded, image_size=32, repeats=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["train", "ptq", "qat", "bench"])
    parser.add_argument("model", choices=sorted(ARCHITECTURES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads for this step (default 1)")
    parser.add_argument("--device", help="train and qat: where to train (cuda; default the CPU: about 22 min "
                        "an epoch of ResNet18 on 2 cores); int8 models always run on the CPU")
    parser.add_argument("--compile", choices=train.COMPILE_MODES, metavar="MODE",
                        help="train: through torch.compile in this mode (reduce-overhead: CUDA graphs; "
                        f"one of {', '.join(train.COMPILE_MODES)})")
    parser.add_argument("--epochs", type=int, help="train: this many epochs instead of the recipe's (same "
                        "schedule shape: warm-up, then cosine to zero)")
    parser.add_argument("--cutout", type=int, default=0, help="train: erase a square of this side in each "
                        "training image (DeVries & Taylor; default 0, none)")
    parser.add_argument("--weight-decay", type=float, help="train: this weight decay instead of the recipe's")
    parser.add_argument("--epochs-within", type=float, metavar="SECONDS", help="train: as many epochs as end "
                        "within this many seconds from the start (timed on a few steps first; at most --epochs; "
                        "the recorded command names the epochs chosen)")
    add_data_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe_flags = (args.epochs, args.cutout or None, args.weight_decay, args.epochs_within)
    if any(flag is not None for flag in recipe_flags) and args.step != "train":
        parser.error("--epochs, --cutout, --weight-decay and --epochs-within are for train (the float recipe); "
                     "QAT keeps its own")
    if (args.epochs is not None and args.epochs < 1) or args.cutout < 0:
        parser.error(f"--epochs {args.epochs} / --cutout {args.cutout}: use epochs >= 1 and cutout >= 0")
    if (args.weight_decay is not None and args.weight_decay < 0) or (args.epochs_within or 1) <= 0:
        parser.error(f"--weight-decay {args.weight_decay} / --epochs-within {args.epochs_within}: use a weight "
                     "decay >= 0 and a positive number of seconds")
    if args.device and args.step not in ("train", "qat"):
        parser.error(f"--device is for train and qat; {args.step} runs int8 models on the CPU")
    if args.compile and args.step != "train":
        parser.error("--compile is for train (float training); QAT's observers change between steps")
    if args.device:
        torch.device(args.device)  # a bad name fails here, before any data is read
        torch.backends.cudnn.benchmark = True
    if args.step == "train":
        train_float(args.model, args.data, args.data_dir, args.device, args.compile, args.epochs, args.cutout,
                    args.weight_decay, args.epochs_within)
    elif args.step == "bench":
        bench(args.model)
    else:
        quantize(args.model, args.step, args.data, args.data_dir, args.device)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data`` and ``--data-dir``, as ``qzoo`` takes them (shared with tools/publish.py)."""
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"{DEFAULT_DATA} (default: torchvision downloads "
                        "CIFAR-10 into --data-dir), or an ImageFolder / .tar.gz with train/ and test/ of CIFAR-10")
    parser.add_argument("--data-dir", help="where torch/cifar10 is kept (default: the qzoo cache)")


if __name__ == "__main__":
    main()
