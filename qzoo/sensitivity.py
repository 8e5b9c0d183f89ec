"""Which layer hurts in int8: a per-layer sensitivity report of a calibrated PTQ model.

For each quantized layer (conv, linear, fused block, add/mul/cat, the input stub), measured
against the float model on the same images with int8 simulated in float
(:class:`qzoo.quantization.Int8Simulation`):

- ``output_sqnr_db``: the SQNR of the layer's own output with every layer quantized;
- ``only_quantized``: model-output SQNR and top-1 agreement with float when only this layer is
  quantized (what the layer costs on its own);
- ``only_float``: the same when every layer but this one is quantized (what keeping it in float buys).

Both per-layer passes start at the layer: everything before it is replayed from the float (or
all-int8) pass of the same batch, so a report costs about one forward pass per layer, not two.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .quantization import Int8Simulation


@dataclass
class _Error:
    """Running sums for an SQNR (signal and noise power) and a top-1 agreement."""

    signal: float = 0.0
    noise: float = 0.0
    agree: int = 0
    images: int = 0

    def add(self, reference: Tensor, measured: Tensor, logits: bool = False) -> None:
        self.signal += float(reference.double().square().sum())
        self.noise += float((measured.double() - reference.double()).square().sum())
        if logits:
            self.agree += int((measured.argmax(1) == reference.argmax(1)).sum())
            self.images += reference.shape[0]

    @property
    def sqnr_db(self) -> float | None:
        """10 log10(signal / noise); ``None`` where int8 changed nothing (no noise at all)."""
        if self.noise == 0:
            return None
        return 10 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf

    def summary(self) -> dict[str, float | None]:
        return {"sqnr_db": self.sqnr_db, "agreement": 100.0 * self.agree / self.images if self.images else None}


def _images(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@contextlib.contextmanager
def _capturing(simulation: Int8Simulation) -> Iterator[dict[str, Tensor]]:
    """Record each layer's output (what its observer passes on), in execution order."""
    outputs: dict[str, Tensor] = {}

    def record(name: str, module: nn.Module, args: Any, output: Tensor) -> None:
        if name in outputs:
            raise RuntimeError(f"layer {name} ran twice in one forward pass: give each use its own module")
        outputs[name] = output

    handles = [layer.activation_post_process.register_forward_hook(
        lambda module, args, output, name=name: record(name, module, args, output))
        for name, layer in simulation.layers.items()]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _replaying(simulation: Int8Simulation, outputs: dict[str, Tensor], names: list[str]) -> Iterator[None]:
    """Layers in ``names`` return their recorded output instead of computing it (a FloatFunctional,
    not called through ``forward``, recomputes from replayed inputs: the same values, cheaply)."""
    layers = [simulation.layers[name] for name in names]
    try:
        for name, layer in zip(names, layers):
            layer.forward = lambda *args, _recorded=outputs[name], **kwargs: _recorded
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


@contextlib.contextmanager
def _out_of_place(model: nn.Module) -> Iterator[None]:
    """Modules with ``inplace=True`` (torchvision's ReLU, Hardswish) compute out of place meanwhile: the
    recorded outputs they would overwrite are replayed later. Values are the same either way."""
    switched = [module for module in model.modules() if getattr(module, "inplace", None) is True]
    try:
        for module in switched:
            module.inplace = False
        yield
    finally:
        for module in switched:
            module.inplace = True


def sensitivity(model: nn.Module, batches: Iterable[Any], *, progress: bool = True) -> dict[str, Any]:
    """The per-layer int8 sensitivity of a calibrated PTQ-prepared ``model`` on ``batches`` (tensors or
    ``(images, labels)`` pairs), as this module's docstring defines it. ``model`` is left as it was.

    Returns ``{"model": {...}, "layers": [...], "images", "seconds"}``: the whole-model SQNR and top-1
    agreement with every layer quantized, and one entry per layer in execution order.
    """
    started = time.perf_counter()
    simulation = Int8Simulation(model)
    names = list(simulation.layers)
    model.eval()
    whole, own = _Error(), {name: _Error() for name in names}
    alone, kept = {name: _Error() for name in names}, {name: _Error() for name in names}
    order: list[str] = []
    with torch.no_grad(), _out_of_place(model):
        for batch in tqdm(batches, desc="sensitivity", unit="batch", disable=not progress):
            images = _images(batch)
            with _capturing(simulation) as float_outputs, simulation.quantizing(()):
                float_logits = model(images)
            with _capturing(simulation) as int8_outputs, simulation.quantizing(names):
                int8_logits = model(images)
            order = [name for name in float_outputs if name in int8_outputs]
            whole.add(float_logits, int8_logits, logits=True)
            for name in order:
                own[name].add(float_outputs[name], int8_outputs[name])
            for index, name in enumerate(tqdm(order, desc="layers", unit="layer", leave=False, disable=not progress)):
                with _replaying(simulation, float_outputs, order[:index]), simulation.quantizing([name]):
                    alone[name].add(float_logits, model(images), logits=True)
                with _replaying(simulation, int8_outputs, order[:index]), simulation.quantizing(set(names) - {name}):
                    kept[name].add(float_logits, model(images), logits=True)
    if not order:
        raise ValueError("sensitivity got no batches: pass a few batches of images")
    layers = [{"name": name, "type": type(simulation.layers[name]).__name__, "output_sqnr_db": own[name].sqnr_db,
               "only_quantized": alone[name].summary(), "only_float": kept[name].summary()} for name in order]
    return {"model": whole.summary(), "layers": layers, "images": whole.images,
            "seconds": time.perf_counter() - started}


def _db(value: float | None) -> float:
    return math.inf if value is None else value


def most_sensitive(report: dict[str, Any], count: int | None = None, *, can_stay_float: bool = False) -> list[str]:
    """Layer names, the one whose staying in float helps the model output most first (``only_float``
    SQNR, then agreement); with ``can_stay_float``, only layers ``float_layers=`` accepts (not the
    input stub, whose rounding is the input's)."""
    layers = [layer for layer in report["layers"] if not (can_stay_float and layer["type"] == "QuantStub")]
    ranked = sorted(layers, key=lambda layer: (-_db(layer["only_float"]["sqnr_db"]), -layer["only_float"]["agreement"]))
    return [layer["name"] for layer in ranked[:count]]


def _top1(model: nn.Module, simulation: Int8Simulation, quantized: set[str], batches: list[Any]) -> float:
    correct = total = 0
    with torch.no_grad(), simulation.quantizing(quantized):
        for images, labels in batches:
            correct += int((model(images).argmax(1) == labels).sum())
            total += labels.shape[0]
    return 100.0 * correct / total


def fewest_float_layers(model: nn.Module, report: dict[str, Any], batches: Iterable[Any], *, max_drop: float,
                        progress: bool = True) -> dict[str, Any]:
    """The target mode: the fewest of ``report``'s most sensitive layers to keep float so that the top-1 of
    a calibrated PTQ-prepared ``model`` on ``batches`` (``(images, labels)`` pairs, held out from
    calibration) is at most ``max_drop`` points below float.

    int8 is simulated (:class:`qzoo.quantization.Int8Simulation`), one pass over ``batches`` per try:
    k = 0, 1, 2, 4, 8... layers until the bound holds, then halving between the last miss and the
    first hit (a ranking, not an exhaustive search: it assumes more float layers never hurt).
    Returns ``{"float_layers", "float_top1", "int8_top1", "met", "tries"}``; ``met`` is false when even
    every rankable layer float misses the bound (``float_layers`` then names them all). Pass the
    layers to ``prepare_ptq(float_layers=...)`` / ``qzoo ptq --float-layers``.
    """
    if max_drop < 0:
        raise ValueError(f"max_drop is in points of top-1 and cannot be negative, got {max_drop}")
    batches = [(batch[0], batch[1]) for batch in batches]
    if not batches:
        raise ValueError("fewest_float_layers needs labelled batches of held-out images")
    simulation = Int8Simulation(model)
    ranked = most_sensitive(report, can_stay_float=True)
    unknown = set(ranked) - set(simulation.layers)
    if unknown:
        raise ValueError(f"the report names layers this model lacks ({sorted(unknown)[:3]}): make the report "
                         "from the same model")
    model.eval()
    float_top1 = _top1(model, simulation, set(), batches)
    tries: dict[int, float] = {}
    bar = tqdm(desc="float layers", unit="try", disable=not progress)

    def meets(count: int) -> bool:
        if count not in tries:
            tries[count] = _top1(model, simulation, set(simulation.layers) - set(ranked[:count]), batches)
            bar.update()
        return float_top1 - tries[count] <= max_drop

    low, high = -1, 0  # low: the most layers known to miss; high: the count tried next
    while not meets(high) and high < len(ranked):
        low, high = high, min(len(ranked), max(1, 2 * high))
    if meets(high):
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if meets(middle) else (middle, high)
    bar.close()
    return {"float_layers": ranked[:high], "float_top1": float_top1, "int8_top1": tries[high],
            "met": meets(high), "max_drop": max_drop, "images": sum(len(labels) for _, labels in batches),
            "tries": [{"float_layers": count, "int8_top1": top1} for count, top1 in sorted(tries.items())]}


def _cell(value: float | None) -> str:
    return "exact" if value is None else f"{value:.1f}"


def format_table(report: dict[str, Any], rows: int | None = 15) -> str:
    """A Markdown table of the ``rows`` most sensitive layers (all with ``None``), most sensitive first."""
    by_name = {layer["name"]: layer for layer in report["layers"]}
    lines = [f"all layers int8: output SQNR {_cell(report['model']['sqnr_db'])} dB, top-1 agreement "
             f"{report['model']['agreement']:.1f} % ({report['images']} images)", "",
             "| layer | type | its output SQNR, all int8 (dB) | only it int8: SQNR / agreement | "
             "only it float: SQNR / agreement |", "|---|---|---|---|---|"]
    for name in most_sensitive(report, rows):
        layer = by_name[name]
        alone, kept = layer["only_quantized"], layer["only_float"]
        lines.append(f"| {name} | {layer['type']} | {_cell(layer['output_sqnr_db'])} | {_cell(alone['sqnr_db'])} / "
                     f"{alone['agreement']:.1f} % | {_cell(kept['sqnr_db'])} / {kept['agreement']:.1f} % |")
    return "\n".join(lines)


def check_plotting() -> None:
    """Raise, naming the install command, where :func:`plot` cannot draw (checked before a long run)."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise RuntimeError('the sensitivity chart needs matplotlib: pip install "qzoo[plot]"') from None


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """A PNG bar chart of the report (``pip install "qzoo[plot]"``): per layer in execution order, the
    model-output SQNR with only that layer int8 and with only that layer float (no error drawn at 80 dB).
    Drawn on a figure of its own, outside pyplot: the caller's matplotlib backend and figures are left alone."""
    check_plotting()
    from matplotlib.figure import Figure

    layers = report["layers"]
    positions = range(len(layers))
    figure = Figure(figsize=(max(8.0, 0.18 * len(layers)), 4.5))
    axis = figure.subplots()
    axis.bar([p - 0.2 for p in positions], [min(_db(layer["only_quantized"]["sqnr_db"]), 80) for layer in layers],
             width=0.4, label="only this layer int8")
    axis.bar([p + 0.2 for p in positions], [min(_db(layer["only_float"]["sqnr_db"]), 80) for layer in layers],
             width=0.4, label="only this layer float")
    axis.axhline(min(_db(report["model"]["sqnr_db"]), 80), color="black", linewidth=0.8, label="all layers int8")
    axis.set_xticks(list(positions), [layer["name"] for layer in layers], rotation=90, fontsize=6)
    axis.set_ylabel("model output SQNR vs float (dB)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path
