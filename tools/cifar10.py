"""The CIFAR-10 worked example, one command per step (float training, PTQ, QAT, results table).

    python tools/cifar10.py train resnet18         # float training from scratch, resumable
    python tools/cifar10.py train mobilenet_v2

Runs go to ``runs/cifar10/<model>-<step>/`` (checkpoint every epoch; rerun to resume).
Data: ``../shared/datasets/cifar10/cifar10-jpeg.tar.gz`` unpacked once into qzoo's cache.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

import qzoo
from qzoo.data import ImageTensors, unpack_archive
from qzoo.train import Recipe, evaluate, fit

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10" / "cifar10-jpeg.tar.gz"
RUNS = ROOT / "runs" / "cifar10"

# 32x32 inputs: ResNet18 exactly as torchvision defines it; MobileNetV2 with a stride-1 stem
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet18": {"num_classes": 10},
    "mobilenet_v2": {"num_classes": 10, "stem_stride": 1},
}
FLOAT_RECIPES = {
    "resnet18": Recipe(epochs=10, lr=0.1, batch_size=128, weight_decay=5e-4, warmup_epochs=0.5),
    "mobilenet_v2": Recipe(epochs=8, lr=0.1, batch_size=128, weight_decay=4e-5, warmup_epochs=0.5),
}


def load_split(split: str) -> ImageTensors:
    """The decoded CIFAR-10 ``train`` or ``test`` split."""
    return ImageTensors.from_folder(unpack_archive(ARCHIVE) / split, size=32)


def train_float(name: str, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = qzoo.get_model(name, **ARCHITECTURES[name])
    recipe = FLOAT_RECIPES[name]
    train, test = load_split("train"), load_split("test")
    out = RUNS / f"{name}-float"
    history = fit(model, lambda epoch: train.batches(recipe.batch_size, augment=True, shuffle=True, seed=epoch),
                  recipe, out, evaluate_fn=lambda m: evaluate(m, test.batches(500)))
    print(json.dumps(history[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    train = sub.add_parser("train", help="train the float model from scratch (resumable)")
    train.add_argument("model", choices=sorted(ARCHITECTURES))
    train.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.step == "train":
        train_float(args.model, args.threads)


if __name__ == "__main__":
    main()
