"""Cross-layer equalization and high-bias absorption on a float model, before fusion.

Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction" (2019):
where conv A's output reaches conv B only through a BatchNorm and a ReLU (or nothing), scaling
A's output channel ``i`` by ``1 / s_i`` and B's input channel ``i`` by ``s_i`` leaves the network's
function unchanged, since ``relu(x / s) = relu(x) / s`` for ``s > 0``. Choosing
``s_i = sqrt(r_A,i / r_B,i)`` (the weight ranges of A's output channel, BatchNorm folded in, and of
B's input channel) gives both the same range, so per-tensor int8 weights stop wasting codes on
one outlier channel. Depthwise convs gain most: their per-channel ranges differ by 100x.

Chains are found by tracing the model (``torch.fx``); each link must have one user, so a tensor
that also feeds a residual sum or a concatenation is never rescaled. A ReLU6, hardswish or SiLU
between the convs stops the chain: ``relu6(x / s) != relu6(x) / s``, so equalizing through it
would change the float model (AIMET swaps ReLU6 for ReLU first; EfficientNet-Lite's weights lose
about 30 points of top-1 that way). :func:`equalization_pairs` reports what it passed over.

High-bias absorption then moves the part of A's bias that the ReLU never clips, ``c_i = max(0,
beta_i - 3 |gamma_i|)`` from A's BatchNorm, into B's bias (``relu(x - c) + c = relu(x)`` wherever
``x >= c``), shrinking A's output range. It changes the float output only where a pre-activation
falls more than three standard deviations below its mean, and only for an unpadded B (a padded B
would see zeros, not ``c``, at its borders).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import Tensor, nn

from ._record import note_ptq_method
from .models._blocks import QuantizableSiLU
from .quantization import fused_mode

__all__ = ["Pair", "absorb_high_bias", "equalization_pairs", "equalize"]


@dataclass(frozen=True)
class Pair:
    """Conv ``first`` -> optional BatchNorm ``norm`` -> optional ``activation`` -> conv ``second``
    (``second_norm``: the BatchNorm right after ``second``, if any)."""

    first: str
    norm: str | None
    activation: str | None
    second: str
    second_norm: str | None = None


_HOMOGENEOUS = (nn.ReLU,)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, QuantizableSiLU, nn.Hardtanh, nn.Sigmoid, nn.Hardsigmoid,
                nn.GELU)
_RELU_FUNCTIONS = (torch.relu, torch.nn.functional.relu, torch.relu_)


def _module(modules: dict[str, nn.Module], node: fx.Node) -> nn.Module | None:
    return modules.get(str(node.target)) if node.op == "call_module" else None


def _norm(modules: dict[str, nn.Module], node: fx.Node | None) -> str | None:
    """The name of the affine BatchNorm ``node`` calls, if it calls one (its gain and bias take the scales)."""
    module = _module(modules, node) if node is not None else None
    return str(node.target) if isinstance(module, nn.BatchNorm2d) and module.affine else None


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _activation(modules: dict[str, nn.Module], node: fx.Node) -> tuple[str, bool] | None:
    """``(name, homogeneous)`` for an activation node, ``None`` for anything else."""
    module = _module(modules, node)
    if module is not None and isinstance(module, _ACTIVATIONS):
        return str(node.target), isinstance(module, _HOMOGENEOUS)
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return node.name, True
    return None


class _ActivationLeafTracer(fx.Tracer):
    """Keeps every activation module one node (qzoo's SiLU, a sigmoid and a product inside, as ``nn.SiLU`` is)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, _ACTIVATIONS) or super().is_leaf_module(module, qualified_name)


def equalization_pairs(model: nn.Module) -> tuple[list[Pair], list[Pair]]:
    """The conv pairs of ``model`` equalization can rescale exactly, and those it passes over because
    the activation between them is not a ReLU (ReLU6, hardswish, SiLU...). Module names as ``model`` has them."""
    modules = dict(model.named_modules())
    graph = _ActivationLeafTracer().trace(model)
    uses: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            uses[str(node.target)] = uses.get(str(node.target), 0) + 1
    pairs, passed_over = [], []
    for node in graph.nodes:
        if not isinstance(_module(modules, node), nn.Conv2d) or uses[str(node.target)] > 1:
            continue
        first, norm, activation, homogeneous = str(node.target), None, None, True
        link = _only_user(node)
        if _norm(modules, link) is not None:
            norm, link = _norm(modules, link), _only_user(link)
        found = _activation(modules, link) if link is not None else None
        if found is not None:
            (activation, homogeneous), link = found, _only_user(link)
        if link is None or not isinstance(_module(modules, link), nn.Conv2d) or uses[str(link.target)] > 1:
            continue
        if (norm is not None and uses[norm] > 1) or (activation in uses and uses[activation] > 1):
            continue  # a shared module: rescaling it would touch another use
        second_norm = _norm(modules, _only_user(link))
        second_norm = second_norm if second_norm is not None and uses[second_norm] == 1 else None
        (pairs if homogeneous else passed_over).append(Pair(first, norm, activation, str(link.target), second_norm))
    return pairs, passed_over


def _output_range(conv: nn.Conv2d, norm: nn.BatchNorm2d | None) -> Tensor:
    """Each output channel's weight range, BatchNorm folded in as fusion will fold it."""
    weight_range = conv.weight.detach().abs().flatten(1).amax(1)
    if norm is None:
        return weight_range
    return weight_range * (norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)).abs()


def _input_view(conv: nn.Conv2d, values: Tensor) -> Tensor:
    """Per-input-channel ``values`` laid out as ``conv.weight`` (``[out, in / groups, ...]``), groups included."""
    out_channels, per_group = conv.weight.shape[:2]
    groups = conv.groups
    grid = values.reshape(groups, 1, per_group).expand(groups, out_channels // groups, per_group)
    return grid.reshape(out_channels, per_group, *([1] * (conv.weight.dim() - 2)))


def _input_range(conv: nn.Conv2d) -> Tensor:
    """Each input channel's weight range in ``conv`` (over its output channels and kernel)."""
    weight = conv.weight.detach().abs()
    out_channels, per_group = weight.shape[:2]
    by_group = weight.reshape(conv.groups, out_channels // conv.groups, per_group, -1)
    return by_group.amax(dim=(1, 3)).reshape(-1)


@torch.no_grad()
def _rescale(model: nn.Module, pair: Pair) -> float:
    """Equalize one pair; returns the largest ``|log s|`` applied (0 once converged)."""
    first, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
    norm = model.get_submodule(pair.norm) if pair.norm else None
    high, low = _output_range(first, norm), _input_range(second)
    scale = torch.where((high > 0) & (low > 0), torch.sqrt(high / low.clamp_min(1e-30)), torch.ones_like(high))
    target = norm if norm is not None else first
    shape = (-1,) if target is norm else (-1, *([1] * (first.weight.dim() - 1)))
    target.weight.div_(scale.reshape(shape))
    if target.bias is not None:
        target.bias.div_(scale)
    second.weight.mul_(_input_view(second, scale))
    return float(scale.log().abs().max()) if scale.numel() else 0.0


def equalize(model: nn.Module, *, rounds: int = 50, tolerance: float = 1e-6) -> list[Pair]:
    """Cross-layer equalization of a float, unfused ``model``, in place; returns the pairs rescaled.

    Pairs sharing a conv (expand -> depthwise -> project) are equalized in turn until no scale
    moves more than ``tolerance`` (log scale) or ``rounds`` passes. The float function is unchanged
    up to rounding; call before ``prepare_ptq``/``prepare_qat`` (fusion folds the new BatchNorm).
    """
    _require_unfused(model)
    pairs, passed_over = equalization_pairs(model)
    if not pairs:
        kinds = sorted({type(model.get_submodule(pair.activation)).__name__ for pair in passed_over})
        why = (f"its {len(passed_over)} conv pairs have {' or '.join(kinds)} between them, not a ReLU"
               if passed_over else "its convs meet at residual sums, shared modules or other layers")
        warnings.warn(f"equalize: no conv pair of this model can be rescaled exactly ({why}): the model is "
                      "unchanged", UserWarning, stacklevel=2)
    for _ in range(rounds):
        if max((_rescale(model, pair) for pair in pairs), default=0.0) <= tolerance:
            break
    note_ptq_method(model, "equalization")
    return pairs


@torch.no_grad()
def absorb_high_bias(model: nn.Module, pairs: list[Pair], *, sigmas: float = 3.0) -> dict[str, int]:
    """Move the never-clipped part of each ReLU pair's bias into the next conv (see the module text),
    in place; returns the channels absorbed per pair (``"first->second"``).

    Only pairs with a BatchNorm (its statistics give the bound), a ReLU, and an unpadded second
    conv with a bias or a BatchNorm after it to take the shift.
    """
    absorbed: dict[str, int] = {}
    for pair in pairs:
        second = model.get_submodule(pair.second)
        receiver = second if second.bias is not None else (
            model.get_submodule(pair.second_norm) if pair.second_norm else None)
        if pair.norm is None or pair.activation is None or receiver is None or not _unpadded(second):
            continue
        norm = model.get_submodule(pair.norm)
        shift = (norm.bias - sigmas * norm.weight.abs()).clamp_min(0)
        if not bool((shift > 0).any()):
            continue
        norm.bias.sub_(shift)
        carried = (second.weight * _input_view(second, shift)).flatten(1).sum(1)
        if receiver is second:
            second.bias.add_(carried)
        else:
            receiver.running_mean.sub_(carried)  # BatchNorm(z + c) == BatchNorm with its mean moved by -c
        absorbed[f"{pair.first}->{pair.second}"] = int((shift > 0).sum())
    note_ptq_method(model, "high_bias_absorption")
    return absorbed


def _unpadded(conv: nn.Conv2d) -> bool:
    return conv.padding == "valid" if isinstance(conv.padding, str) else not any(conv.padding)


def _require_unfused(model: nn.Module) -> None:
    if fused_mode(model) is not None:
        raise RuntimeError("equalize: the model is already fused or prepared; equalize the float model first "
                           "(qzoo.quantize(..., equalize=True) does it in the right order)")
