"""Training loops shared by float training, QAT and calibration helpers; DDP-aware, resumable.

``fit`` runs unchanged in one process or under ``torchrun --nproc_per_node=N``: when a
process group is initialised it wraps the model in DistributedDataParallel, gives each rank
its share of every epoch, and lets only rank 0 write checkpoints and print progress.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import quantization, serialization
from ._record import record_of

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile``'s modes, as :func:`fit` takes them."""

Batches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]
"""A function of the epoch number returning that epoch's ``(images, labels)`` batches."""


@dataclass(frozen=True)
class Recipe:
    """How to train: SGD with Nesterov momentum, linear warm-up then cosine decay per step.

    For QAT, ``freeze_observers_after`` / ``freeze_bn_after`` name the epoch (counting from 1)
    after which observer ranges / BatchNorm statistics stop updating, as in torchvision's
    reference QAT recipe. Serializes to JSON for checkpoints and model cards.
    """

    epochs: int
    lr: float
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    freeze_observers_after: int | None = None
    freeze_bn_after: int | None = None
    seed: int = 0
    """Seeds each epoch's random draws (dropout), so a run, resumed or not, repeats bit for bit."""

    def __post_init__(self) -> None:
        numbers = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        not_finite = [f"{k}={v}" for k, v in numbers.items() if isinstance(v, float) and not math.isfinite(v)]
        if not_finite:
            raise ValueError(f"recipe values must be finite numbers, got {', '.join(not_finite)}")
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise ValueError(f"recipe needs epochs >= 1, lr > 0 and batch_size >= 1, got {self}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be in [0, epochs={self.epochs})")
        if not (0 <= self.momentum < 1 and self.weight_decay >= 0 and 0 <= self.label_smoothing < 1):
            raise ValueError(f"recipe needs 0 <= momentum < 1, weight_decay >= 0 and 0 <= label_smoothing < 1, "
                             f"got momentum={self.momentum}, weight_decay={self.weight_decay}, "
                             f"label_smoothing={self.label_smoothing}")
        for name in ("freeze_observers_after", "freeze_bn_after"):
            if numbers[name] is not None and numbers[name] < 1:
                raise ValueError(f"{name}={numbers[name]}: name an epoch (counting from 1), or None never to freeze")

    @classmethod
    def qat_finetune(cls, epochs: int, lr: float, *, batch_size: int = 128, weight_decay: float = 5e-5) -> Recipe:
        """A QAT fine-tune of a trained float model: observers and BatchNorm statistics freeze after the
        second-to-last epoch (after the first of one or two), so the last epoch settles on fixed ranges."""
        freeze = max(1, epochs - 1)
        return cls(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                   freeze_observers_after=freeze, freeze_bn_after=freeze)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Rebuild a recipe from :meth:`to_dict`'s output; unknown keys are an error."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown recipe fields {sorted(unknown)}")
        return cls(**data)

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """The learning rate for optimizer step ``step`` (0-based)."""
        warmup = self.warmup_epochs * steps_per_epoch
        if step < warmup:
            return self.lr * (step + 1) / warmup
        total = self.epochs * steps_per_epoch
        progress = (step - warmup) / max(1.0, total - warmup)
        return 0.5 * self.lr * (1 + math.cos(math.pi * min(1.0, progress)))


def refresh_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> nn.Module:
    """Recompute every BatchNorm's running statistics from ``batches`` (a cumulative average).

    Weights are untouched and the model's train/eval mode is restored. A freshly initialised
    network has mean-0/var-1 statistics that make its eval-mode output nearly constant; this
    gives it realistic activations for numeric checks and demos.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("refresh_batchnorm: the model has no BatchNorm layers (int8 and PTQ-prepared models "
                         "have them folded into their convs): refresh the float model before quantizing it")
    momenta = [m.momentum for m in norms]
    saved = [{k: v.clone() for k, v in norm.state_dict().items()} for norm in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
                seen += 1
        if not seen:
            raise ValueError("refresh_batchnorm got no batches: the statistics are left as they were")
    except BaseException:  # an empty, failing or interrupted pass keeps the statistics the model had
        for norm, state in zip(norms, saved):
            norm.load_state_dict(state)
        raise
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return model


def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], *, progress: bool = False,
             desc: str = "eval", num_classes: int | None = None) -> dict[str, Any]:
    """Top-1 and top-5 accuracy (percent) and the image count of ``model`` in eval mode over ``batches``, classes
    ranked by :func:`top_classes`; ``ties``: the images whose top-1 that ranking's tie rule decided (see
    :func:`tied_at_top`); with ``num_classes``, also ``per_class``: ``[top-1 hits, images]`` for each class label."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    correct1 = correct5 = seen = ties = 0
    per_class = torch.zeros(num_classes or 0, 2, dtype=torch.int64)
    try:
        with torch.inference_mode():
            for images, labels in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
                logits = model(images.to(device)).float().cpu()
                if labels.numel() and int(labels.max()) >= logits.shape[1]:
                    raise ValueError(f"a label is {int(labels.max())} but the model scores {logits.shape[1]} classes: "
                                     "the data's classes are not the model's (label them by the model's indices)")
                hits = top_classes(logits, 5) == labels.view(-1, 1)
                ties += int(tied_at_top(logits).sum())
                correct1 += int(hits[:, 0].sum())
                correct5 += int(hits.any(dim=1).sum())
                seen += labels.numel()
                if num_classes:
                    per_class[:, 0] += torch.bincount(labels[hits[:, 0]], minlength=num_classes)
                    per_class[:, 1] += torch.bincount(labels, minlength=num_classes)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("evaluate got no batches: check the data folder")
    metrics: dict[str, Any] = {"acc1": 100.0 * correct1 / seen, "acc5": 100.0 * correct5 / seen, "images": seen,
                               "ties": ties}
    if num_classes:
        metrics["per_class"] = per_class.tolist()
    return metrics


def top_classes(scores: Tensor, k: int) -> Tensor:
    """The ``k`` best class indices of each row of ``scores`` (classes on the last dimension), best first; equal
    scores put the lower class index first, as ``argmax`` does. ``topk`` leaves the order of equal values unspecified
    (it changes with ``k``), and int8 logits, on a grid of at most 256 codes, tie where float ones do not."""
    return scores.sort(dim=-1, descending=True, stable=True).indices[..., :k]


def tied_at_top(scores: Tensor) -> Tensor:
    """For each row of ``scores``, whether two or more classes share its highest score: the rows whose top-1 the tie
    rule of :func:`top_classes` decides rather than the scores."""
    return (scores == scores.max(dim=-1, keepdim=True).values).sum(dim=-1) > 1


def int8_copy(model: nn.Module) -> nn.Module:
    """A converted int8 copy (on the CPU, where int8 kernels run) of a prepared (QAT or PTQ) model;
    the original keeps training where it is."""
    return quantization.convert(copy.deepcopy(model).cpu())


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer; the CPU for a model without any (int8)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size; ``(0, 1)`` without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ----------------------------------------------------------------------------- checkpoints

_CHECKPOINT = "checkpoint"


def _checkpoint_dir(out_dir: Path) -> Path | None:
    for name in (_CHECKPOINT, _CHECKPOINT + ".old"):  # .old survives a kill between the two renames
        if (out_dir / name / "state.json").is_file():
            return out_dir / name
    return None


def _write_checkpoint(out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                      state: dict[str, Any]) -> None:
    """Write model (safetensors), optimizer (tensors-only torch file) and state (JSON) atomically."""
    staging = out_dir / f".{_CHECKPOINT}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    serialization.save_state(model, staging / "model.safetensors")
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    (staging / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    current, old = out_dir / _CHECKPOINT, out_dir / (_CHECKPOINT + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if current.exists():
        current.rename(old)
    staging.rename(current)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_state(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The state (``epoch``, ``history``, ``recipe``, ``identity``) of the last complete checkpoint in ``out_dir``,
    without loading any tensors; ``None`` when there is none."""
    found = _checkpoint_dir(Path(out_dir))
    return None if found is None else json.loads((found / "state.json").read_text())


def load_checkpoint(out_dir: str | os.PathLike[str], model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any] | None:
    """Restore the last complete checkpoint in ``out_dir`` into ``model`` (and ``optimizer``).

    Returns its state (``epoch``, ``history``, ``recipe``), or ``None`` when there is none.
    The optimizer file is read with ``weights_only=True``: it holds tensors and numbers only.
    """
    found = _checkpoint_dir(Path(out_dir))
    if found is None:
        return None
    serialization.load_state(model, found / "model.safetensors")
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(found / "optimizer.pt", map_location="cpu", weights_only=True))
    return json.loads((found / "state.json").read_text())


# ----------------------------------------------------------------------------- the loop


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]  # biases and norms
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)


def _apply_freezes(model: nn.Module, recipe: Recipe, epoch: int) -> None:
    """Freeze observers / BatchNorm statistics once ``epoch`` (0-based, about to run) is past the recipe's marks."""
    if recipe.freeze_observers_after is not None and epoch >= recipe.freeze_observers_after:
        quantization.freeze_observers(model)
    if recipe.freeze_bn_after is not None and epoch >= recipe.freeze_bn_after:
        quantization.freeze_batchnorm_stats(model)


def fit(model: nn.Module, batches: Batches, recipe: Recipe, out_dir: str | os.PathLike[str], *,
        evaluate_fn: Callable[[nn.Module], dict[str, float]] | None = None,
        identity: dict[str, Any] | None = None, progress: bool = True, device: str | torch.device | None = None,
        bf16: bool = False, compile_mode: str | None = None, channels_last: bool = False) -> list[dict[str, Any]]:
    """Train ``model`` (float or QAT-prepared) for ``recipe.epochs``, resuming from ``out_dir``.

    After every epoch rank 0 evaluates (``evaluate_fn`` on the model, and on an int8 copy
    when the model is QAT-prepared) and writes a checkpoint; a rerun with the same
    ``out_dir`` continues after the last complete epoch with nothing lost. A checkpoint of
    another recipe or another ``identity`` (JSON data naming what is trained, e.g. the source
    model's digest) is refused rather than continued. Each epoch's random draws come from
    ``recipe.seed`` and the epoch number. ``device`` moves the model there (it stays there) and each
    batch with it; ``bf16`` runs the forward pass under CUDA's bfloat16 autocast (float models on a GPU).
    ``compile_mode`` trains through ``torch.compile`` in that mode (``"default"``, or ``"reduce-overhead"``
    for CUDA graphs: small models on a GPU are otherwise bound by Python's kernel launches); float
    models only, evaluation and checkpoints use the model itself. ``channels_last`` trains in that memory
    format (cuDNN's fast layout for bfloat16 convolutions on a GPU); the model is handed back contiguous.
    Returns the per-epoch history (loss, lr, seconds, metrics).
    """
    out = Path(out_dir)
    rank, world = rank_and_world()
    mode = record_of(model).mode
    if mode in ("int8", "ptq"):
        kind = "an int8" if mode == "int8" else "a PTQ-prepared"
        raise ValueError(f"fit trains float or QAT-prepared models, not {kind} one: train the float model, or "
                         "qzoo.prepare_qat(float_model) for QAT, then qzoo.convert")
    qat = quantization.model_backend(model) is not None
    _check_speed_options(qat, device, bf16, compile_mode)
    if device is not None:
        model.to(device)
    device = model_device(model)
    optimizer = _optimizer(model, recipe)
    state = load_checkpoint(out, model, optimizer) or {"epoch": 0, "history": []}
    if state.get("recipe", recipe.to_dict()) != recipe.to_dict():
        raise ValueError(f"{out} holds a checkpoint from another recipe ({state['recipe']}); "
                         "use a new output folder or the same recipe")
    if state.get("identity", identity) != identity:
        raise ValueError(f"{out} holds a checkpoint of another run ({state['identity']}); use a new output folder")
    history: list[dict[str, Any]] = state["history"]
    with _layout(model, channels_last):
        net: nn.Module = DistributedDataParallel(model) if world > 1 else model
        step_fn = _train_step(net, optimizer, recipe, device, bf16, compile_mode, channels_last)
        for epoch in range(state["epoch"], recipe.epochs):
            if qat:
                _apply_freezes(model, recipe, epoch)
            epoch_batches = batches(epoch)
            if not isinstance(epoch_batches, Sized):
                epoch_batches = list(epoch_batches)
            steps = len(epoch_batches)
            started, total_loss = time.perf_counter(), torch.zeros((), device=device)
            net.train()
            bar = tqdm(epoch_batches, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch",
                       disable=not progress or rank)
            with torch.random.fork_rng():  # the caller's generator is left as it was
                torch.manual_seed(recipe.seed * 100_003 + epoch)
                for step, (images, labels) in enumerate(bar):
                    lr = recipe.lr_at(epoch * steps + step, steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    total_loss += step_fn(images, labels)
                    if not bar.disable and (step % 20 == 0 or step == steps - 1):
                        bar.set_postfix(loss=f"{total_loss.item() / (step + 1):.3f}", lr=f"{lr:.4f}")
            if steps == 0:
                raise ValueError(f"epoch {epoch + 1} got no batches (batches({epoch}) yielded nothing): check the data")
            record: dict[str, Any] = {"epoch": epoch + 1, "loss": total_loss.item() / steps,
                                      "seconds": round(time.perf_counter() - started, 1)}
            if rank == 0:
                if evaluate_fn is not None:
                    record["eval"] = evaluate_fn(model)
                    if qat:
                        record["eval_int8"] = evaluate_fn(int8_copy(model))
                history.append(record)
                _write_checkpoint(out, model, optimizer, {"epoch": epoch + 1, "history": history,
                                                          "recipe": recipe.to_dict(), "identity": identity,
                                                          "world_size": world})
                if progress:
                    tqdm.write(epoch_summary(record, recipe.epochs), file=sys.stderr)  # with the bars, not the report
            else:
                history.append(record)
            if world > 1:
                dist.barrier()
    return history


@contextlib.contextmanager
def _layout(model: nn.Module, channels_last: bool) -> Iterator[None]:
    """The model in the channels-last memory format while the block runs (when asked), in the default one after."""
    if not channels_last:
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def _check_speed_options(qat: bool, device: str | torch.device | None, bf16: bool, compile_mode: str | None) -> None:
    if bf16 and (qat or torch.device(device or "cpu").type != "cuda"):
        raise ValueError("bf16 autocast is for float training on a CUDA device: QAT simulates int8 in float32")
    if compile_mode is not None and (qat or compile_mode not in COMPILE_MODES):
        raise ValueError(f"compile_mode={compile_mode!r}: one of {', '.join(COMPILE_MODES)}, for float training "
                         "(QAT's observers change between steps)")


def _train_step(net: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, device: torch.device, bf16: bool,
                compile_mode: str | None, channels_last: bool) -> Callable[[Tensor, Tensor], Tensor]:
    """One optimizer step on a batch, as :func:`fit` and :func:`seconds_per_step` run it; returns the loss (on the
    device: reading it every step would stall a GPU's queue)."""
    if compile_mode is not None:
        net = torch.compile(net, mode=compile_mode)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    layout = torch.channels_last if channels_last else torch.preserve_format

    def step(images: Tensor, labels: Tensor) -> Tensor:
        images = images.to(device, non_blocking=True, memory_format=layout)
        labels = labels.to(device, non_blocking=True)
        with autocast:
            loss = loss_fn(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def seconds_per_step(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], recipe: Recipe, *,
                     warmup_steps: int = 10, device: str | torch.device | None = None, bf16: bool = False,
                     compile_mode: str | None = None, channels_last: bool = False) -> tuple[float, float]:
    """Time :func:`fit`'s training steps on ``batches`` with the same options, to size a run before starting it.

    Returns ``(warm-up seconds, seconds per step)``: the wall time of the first ``warmup_steps`` steps (cuDNN's
    autotuning, compilation, CUDA graph capture) and the mean of the steps after them. The model is left as it
    was (weights, BatchNorm statistics, gradients, mode, memory format, random generators); it stays on ``device``.
    """
    qat = quantization.model_backend(model) is not None
    _check_speed_options(qat, device, bf16, compile_mode)
    if device is not None:
        model.to(device)
    device = model_device(model)
    saved = {name: value.detach().clone() for name, value in model.state_dict().items()}
    was_training = model.training
    started = warm = ended = 0.0
    timed = 0
    try:
        with _layout(model, channels_last), torch.random.fork_rng():  # fit's own generators, as fit forks them
            step_fn = _train_step(model, _optimizer(model, recipe), recipe, device, bf16, compile_mode, channels_last)
            model.train()
            _synchronize(device)
            started = time.perf_counter()
            for index, (images, labels) in enumerate(batches):
                if index == warmup_steps:
                    _synchronize(device)
                    warm = time.perf_counter()
                step_fn(images, labels)
                timed += index >= warmup_steps
            _synchronize(device)
            ended = time.perf_counter()
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if not timed:
        raise ValueError(f"seconds_per_step: give more batches than warmup_steps={warmup_steps}, so some are timed")
    return warm - started, (ended - warm) / timed


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_summary(record: dict[str, Any], epochs: int) -> str:
    """One readable line for a finished epoch of :func:`fit`'s history."""
    parts = [f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.3f}, {record['seconds']:.1f} s"]
    for key, label in (("eval", "fake-quant" if "eval_int8" in record else "eval"), ("eval_int8", "int8")):
        if key in record:
            parts.append(f"{label} acc@1 {record[key]['acc1']:.2f} %")
    return "; ".join(parts)


def init_distributed() -> bool:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, nccl on GPU).

    Returns whether this process is part of a multi-process run; a plain run does nothing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True
