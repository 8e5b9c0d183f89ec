"""qzoo's own ONNX writer: an int8 model's QDQ graph built from its modules with ``onnx.helper``.

No ``torch.onnx`` and no quantized tensor types: the graph comes from tracing (``torch.fx``) the
model's PTQ-prepared float skeleton, whose modules are named as the int8 model's, and every number
from the int8 state as plain tensors (int8 weights, per-channel scales, activation scales), as
:func:`qzoo.serialization.int8_tensors` splits a live model or an int8 file stores them.

Each value that int8 holds as a quantized tensor appears as ``QuantizeLinear -> DequantizeLinear``
with its own scale and zero point; weights as int8 initializers behind ``DequantizeLinear`` (axis 0,
per channel or per tensor), biases as int32 at input scale x weight scale. ONNX Runtime fuses these
patterns into QLinearConv, QGemm, QLinearAdd... Ops that keep their input's scale (pools)
re-quantize with it, so averages round to the grid as torch's int8 kernels do; a ReLU6 clamps the
uint8 codes themselves; reshapes, transposes, splits and channel shuffles (one Gather of channels)
move codes unchanged and carry none. TensorFlow's SAME strided convs are Convs with
``auto_pad="SAME_UPPER"``. Height, width and batch stay dynamic.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import Tensor, nn

from . import quantization
from .models.efficientnet_lite import SamePad2d, SameSubsample2d

OPSET = 17
"""ONNX opset of the written graph (per-channel QDQ needs 13 or later)."""

__all__ = ["OPSET", "write_onnx"]


def bias_codes(bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int32 codes of float32 ``bias / scale`` rounded toward zero, saturated at int32's range.

    A channel whose weights are nearly all zero has a tiny weight scale, and its bias can exceed
    what int32 holds at ``input scale x weight scale`` (EfficientNet-Lite0's ImageNet weights do):
    the nearest code is the range's end, where a plain cast would wrap to a number of either sign.
    """
    info = np.iinfo(np.int32)
    quotient = np.trunc(bias.astype(np.float32) / scale.astype(np.float32)).astype(np.float64)
    return np.clip(np.nan_to_num(quotient, nan=0.0), info.min, info.max).astype(np.int32)


@dataclass(frozen=True)
class Grid:
    """An activation's int8 grid: the initializer names of its scale and zero point, and their values."""

    scale: str
    zero_point: str
    scale_value: float
    zero_point_value: int


@dataclass(frozen=True)
class Value:
    """An fx value in the graph: the ONNX name of its float tensor and its int8 grid (None: float); ``stored``:
    the int8 tensor whose DequantizeLinear gives ``name``, where there is one (shapes are read from it, so a
    size costs no dequantization)."""

    name: str
    grid: Grid | None = None
    rank: int = 4
    stored: str | None = None


class _Tracer(fx.Tracer):
    """Stops at observers, fused blocks and EfficientNet-Lite's SAME padding modules, which the writer emits whole."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if quantization.is_observer(module) or quantization.is_fused_block(module):
            return True
        if quantization.is_quant_stub(module) or quantization.is_dequant_stub(module):
            return True
        if isinstance(module, (SamePad2d, SameSubsample2d, quantization.ReLU6AsRange)):
            return True
        return super().is_leaf_module(module, qualified_name)


class _Writer:
    """Builds nodes and initializers for one graph; one method per kind of fx node."""

    def __init__(self, skeleton: nn.Module, tensors: dict[str, Tensor], entries: dict[str, Any]) -> None:
        from onnx import TensorProto, helper, numpy_helper

        self.helper, self.numpy_helper, self.proto = helper, numpy_helper, TensorProto
        self.tensors, self.entries = tensors, entries
        self.modules = dict(skeleton.named_modules())
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.values: dict[fx.Node, Any] = {}
        self.same_strides: dict[str, int] = {}  # conv name -> stride, for convs written with SAME padding
        self._count = 0
        self._shapes: dict[str, str] = {}  # tensor -> its Shape
        self._items: dict[tuple[str, int], str] = {}  # (shape tensor, index) -> its gathered item
        self._ranks: dict[str, int] = {}  # shape tensor -> the rank of the tensor it is the shape of
        self._sources: dict[str, str] = {}  # shape tensor -> the tensor it is the shape of

    # --------------------------------------------------------------------------------- building blocks

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint.replace('.', '/')}_{self._count}"

    def constant(self, hint: str, array: np.ndarray) -> str:
        name = self._name(hint)
        self.initializers.append(self.numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, outputs: int = 1, **attributes: Any) -> list[str]:
        names = [self._name(f"{hint}/{op}") for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op, inputs, names, name=self._name(hint), **attributes))
        return names

    def grid_of(self, owner: str) -> Grid:
        """The output grid a converted module ``owner`` stores (``owner.scale``, ``owner.zero_point``),
        or the fixed grid of its observer (sigmoid, hardsigmoid)."""
        scale, zero_point = self.tensors.get(f"{owner}.scale"), self.tensors.get(f"{owner}.zero_point")
        if scale is None or zero_point is None:
            fixed = quantization.fixed_output_grid(self.modules[owner])
            if fixed is None:
                raise ValueError(f"the int8 state has no output scale for {owner!r}: is it this model's state?")
            scale_value, zero_point_value = fixed
        else:
            scale_value, zero_point_value = float(scale.reshape(())), int(zero_point.reshape(()))
        if not (math.isfinite(scale_value) and scale_value > 0 and 0 <= zero_point_value <= 255):
            raise ValueError(f"{owner}: output scale {scale_value} / zero point {zero_point_value} is no quint8 grid")
        return Grid(self.constant(f"{owner}.scale", np.array(scale_value, dtype=np.float32)),
                    self.constant(f"{owner}.zero_point", np.array(zero_point_value, dtype=np.uint8)),
                    scale_value, zero_point_value)

    def requantize(self, name: str, grid: Grid, hint: str, rank: int = 4) -> Value:
        """``name`` rounded to ``grid`` and read back: where int8 stores a tensor."""
        (quantized,) = self.node("QuantizeLinear", [name, grid.scale, grid.zero_point], hint)
        (restored,) = self.node("DequantizeLinear", [quantized, grid.scale, grid.zero_point], hint)
        return Value(restored, grid, rank, quantized)

    def drop_unused(self) -> None:
        """Remove the nodes and initializers nothing reaches ``logits`` through (a size a reshape ended up
        inferring, say), so the file holds only what runs."""
        needed, kept = {"logits"}, []
        for node in reversed(self.nodes):
            if needed.intersection(node.output):
                kept.append(node)
                needed.update(node.input)
        self.nodes = kept[::-1]
        self.initializers = [tensor for tensor in self.initializers if tensor.name in needed]

    def shape(self, x: Value, hint: str) -> str:
        """``Shape`` of ``x``, read from its int8 tensor where it has one; one node per tensor, however often asked."""
        source = x.stored or x.name
        if source not in self._shapes:
            (self._shapes[source],) = self.node("Shape", [source], hint)
            self._ranks[self._shapes[source]], self._sources[self._shapes[source]] = x.rank, source
        return self._shapes[source]

    def int8_weight(self, key: str, spec: dict[str, Any], hint: str) -> tuple[str, np.ndarray]:
        """``DequantizeLinear`` of a stored int8 weight (``spec``: its entry); returns its output and float32 scales."""
        values = self.tensors[key].numpy()
        if values.dtype != np.int8:
            raise ValueError(f"{key}: int8 weights stored as {values.dtype}")
        scale = self.tensors[f"{key}:scale"].to(torch.float32).numpy().reshape(-1)
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"{key}: a weight scale is not a finite positive number")
        zero_point = self.tensors[f"{key}:zero_point"].numpy().astype(values.dtype).reshape(-1)
        per_channel = spec.get("qscheme") == "per_channel_affine"
        axis = int(spec.get("axis", 0)) if per_channel else None
        return self.dequantized_weight(hint, values, scale, zero_point, axis), scale

    def dequantized_weight(self, hint: str, values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                           axis: int | None) -> str:
        """``DequantizeLinear`` of int8 weight values: per channel along ``axis``, or per tensor (``None``)."""
        if axis is None:
            scale, zero_point = scale.reshape(()), zero_point.reshape(())
        scale_name = self.constant(f"{hint}.weight_scale", scale)
        zero_name = self.constant(f"{hint}.weight_zero_point", zero_point)
        (weight,) = self.node("DequantizeLinear", [self.constant(f"{hint}.weight", values), scale_name, zero_name],
                              hint, **({} if axis is None else {"axis": axis}))
        return weight

    def int32_bias(self, bias: Tensor, input_grid: Grid, weight_scale: np.ndarray, hint: str) -> str:
        """The bias as int32 at ``input scale x weight scale`` (float32) behind ``DequantizeLinear``, as ORT's
        integer kernels take it; rounded toward zero as torch's TorchScript-based exporter wrote it, so files
        run as before bit for bit (rounding to nearest measured no better: issue 17's closing note)."""
        scale = (np.float32(input_grid.scale_value) * weight_scale).astype(np.float32)
        scale = np.broadcast_to(scale, bias.shape).copy()
        codes = bias_codes(bias.detach().to(torch.float32).numpy(), scale)
        (restored,) = self.node("DequantizeLinear", [self.constant(f"{hint}.bias", codes),
                                                     self.constant(f"{hint}.bias_scale", scale),
                                                     self.constant(f"{hint}.bias_zero_point",
                                                                   np.zeros(bias.shape, np.int32))],
                                hint, axis=0)
        return restored

    def float_buffer(self, skeleton: nn.Module, target: str) -> Value:
        """A float buffer of the model as a constant (GoogLeNet's and Inception v3's input transform)."""
        buffer = skeleton.get_buffer(target)
        if not buffer.is_floating_point():
            raise NotImplementedError(f"{target}: qzoo's ONNX writer takes float buffers only, not {buffer.dtype}")
        return Value(self.constant(target, buffer.detach().to(torch.float32).numpy()), None, buffer.dim())

    def ints(self, values: Iterable[int], hint: str) -> str:
        return self.constant(hint, np.array(list(values), dtype=np.int64))

    # ------------------------------------------------------------------------------------ modules

    def float_logits_linear(self, name: str, x: Value) -> Value:
        """A :class:`qzoo.quantization.FloatLogitsLinear`: its int8 weights behind ``DequantizeLinear``, a
        float ``Gemm`` with the float bias, and no output grid (the logits stay float)."""
        values = self.tensors[f"{name}.weight"].numpy()
        scale = self.tensors[f"{name}.weight_scale"].to(torch.float32).numpy()
        zero_point = self.tensors[f"{name}.weight_zero_point"].numpy()
        if values.dtype != np.int8 or not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"{name}: float-logits weights must be int8 with finite positive scales")
        if x.grid is None or x.rank != 2:
            raise ValueError(f"{name}: float logits need an int8 input of rank 2, got rank {x.rank}")
        weight = self.dequantized_weight(name, values, scale, zero_point.astype(np.int8), axis=0)
        bias = self.tensors.get(f"{name}.bias")
        bias_name = [self.constant(f"{name}.bias", bias.to(torch.float32).numpy())] if bias is not None else []
        (out,) = self.node("Gemm", [x.name, weight, *bias_name], name, transB=1)
        return Value(out, None, x.rank)

    def conv_or_linear(self, name: str, module: nn.Module, x: Value) -> Value:
        if f"{name}.weight_scale" in self.tensors:  # FloatLogitsLinear: int8 weights, float output
            return self.float_logits_linear(name, x)
        inner = module[0] if quantization.is_fused_block(module) else module
        relu = quantization.is_fused_block(module) and len(module) > 1 and isinstance(module[1], nn.ReLU)
        packed = f"{name}._packed_params._packed_params"
        if packed in self.entries:  # int8 Linear: packed (weight, bias)
            weight_key, spec, bias = f"{packed}:weight", self.entries[packed]["weight"], self.tensors.get(f"{packed}:bias")
        else:
            weight_key, spec, bias = f"{name}.weight", self.entries.get(f"{name}.weight", {}), self.tensors.get(f"{name}.bias")
        int8 = spec.get("kind") == "quantized"
        if int8:
            if x.grid is None:
                raise ValueError(f"{name}: an int8 layer fed by a float value (a missing QuantStub?)")
            weight, weight_scale = self.int8_weight(weight_key, spec, name)
            bias_name = [self.int32_bias(bias, x.grid, weight_scale, name)] if bias is not None else []
        else:  # kept float (FloatLayer): its own float weights, fused BatchNorm folded in
            prefix = f"{name}.0" if quantization.is_fused_block(module) else name
            weight = self.constant(f"{prefix}.weight", self.tensors[f"{prefix}.weight"].to(torch.float32).numpy())
            float_bias = self.tensors.get(f"{prefix}.bias")
            bias_name = [self.constant(f"{prefix}.bias", float_bias.to(torch.float32).numpy())] if float_bias is not None else []
        if isinstance(inner, nn.Conv2d):
            attributes = _conv_attributes(inner)
            if name in self.same_strides:  # TensorFlow's SAME: the smaller half of the padding before
                del attributes["pads"]
                attributes.update(strides=[self.same_strides[name]] * 2, auto_pad="SAME_UPPER")
            (out,) = self.node("Conv", [x.name, weight, *bias_name], name, **attributes)
        elif isinstance(inner, nn.Linear):
            if x.rank != 2:
                raise NotImplementedError(f"{name}: a linear layer on a rank-{x.rank} input")
            (out,) = self.node("Gemm", [x.name, weight, *bias_name], name, transB=1)
        else:
            raise NotImplementedError(f"{name}: no ONNX form for a {type(inner).__name__} yet")
        if relu:
            (out,) = self.node("Relu", [out], name)
        return self.requantize(out, self.grid_of(name), name, x.rank) if int8 else Value(out, None, x.rank)

    def call_module(self, node: fx.Node, module: nn.Module, args: list[Any]) -> Any:
        name = str(node.target)
        x = args[0]
        if quantization.is_observer(module):  # a FloatFunctional's output: int8 stores it on its owner's grid
            owner = name.rpartition(".")[0]
            return self.requantize(x.name, self.grid_of(owner), owner, x.rank)
        if quantization.is_quant_stub(module):
            return self.requantize(x.name, self.grid_of(name), name, x.rank)
        if quantization.is_dequant_stub(module):
            return Value(x.name, None, x.rank)
        if quantization.is_fused_block(module) or isinstance(module, (nn.Conv2d, nn.Linear)):
            return self.conv_or_linear(name, module, x)
        if isinstance(module, (nn.Identity, nn.Dropout)):
            return x
        if isinstance(module, nn.ReLU):
            (out,) = self.node("Relu", [x.name], name)
            return Value(out, x.grid, x.rank)
        if isinstance(module, quantization.ReLU6AsRange):
            return self.relu6_as_range(x, name)
        if isinstance(module, nn.ReLU6):
            return self.relu6(x, name)
        if isinstance(module, nn.MaxPool2d):
            return self.keep_grid("MaxPool", x, name, **_pool_attributes(module))
        if isinstance(module, nn.AvgPool2d):
            return self.keep_grid("AveragePool", x, name, **_pool_attributes(module),
                                  count_include_pad=int(module.count_include_pad))
        if isinstance(module, nn.AdaptiveAvgPool2d):
            _require_global(module.output_size, name)
            return self.keep_grid("GlobalAveragePool", x, name)
        if isinstance(module, (nn.Hardswish, nn.Sigmoid, nn.Hardsigmoid)):
            op = {nn.Hardswish: "HardSwish", nn.Sigmoid: "Sigmoid", nn.Hardsigmoid: "HardSigmoid"}[type(module)]
            attributes = {"alpha": 1 / 6, "beta": 0.5} if op == "HardSigmoid" else {}
            (out,) = self.node(op, [x.name], name, **attributes)
            return self.requantize(out, self.grid_of(name), name, x.rank) if x.grid is not None else Value(out, None, x.rank)
        if isinstance(module, (SamePad2d, SameSubsample2d)):
            raise NotImplementedError(f"{name}: a {type(module).__name__} that is not next to a conv of its kernel "
                                      "and stride; qzoo's ONNX writer writes it as that conv's SAME padding")
        raise NotImplementedError(f"{name}: qzoo's ONNX writer has no form for a {type(module).__name__}")

    def keep_grid(self, op: str, x: Value, hint: str, extra: list[str] | None = None, rank: int | None = None,
                  **attributes: Any) -> Value:
        """An op whose int8 form keeps its input's scale: the float op, rounded back to that grid (exact;
        ONNX Runtime then runs shape ops such as Flatten on the int8 tensor, so the DequantizeLinear that
        follows feeds the next conv or Gemm directly and the pair fuses into QLinearConv or QGemm)."""
        (out,) = self.node(op, [x.name, *(extra or [])], hint, **attributes)
        rank = x.rank if rank is None else rank
        return self.requantize(out, x.grid, hint, rank) if x.grid is not None else Value(out, None, rank)

    def _float(self, value: float, hint: str) -> str:
        return self.constant(f"{hint}.bound", np.array(value, dtype=np.float32))

    def relu6_as_range(self, x: Value, hint: str) -> Value:
        """:class:`qzoo.quantization.ReLU6AsRange` as int8 runs it: a clamp only where the grid can hold
        values outside [0, 6]."""
        grid = x.grid
        if grid is None or not (grid.zero_point_value > 0 or (255 - grid.zero_point_value) * grid.scale_value > 6.0):
            return x
        return self.relu6(x, hint)

    def relu6(self, x: Value, hint: str) -> Value:
        """A clamp to [0, 6] as int8 runs it. On an int8 tensor: a Clip of the uint8 codes themselves to
        [code of 0, code of 6] (exact: rounding a value clamped in float back to the grid gives the clamped
        code), which ONNX Runtime runs on uint8 between its integer kernels, where a float Clip needed a
        DequantizeLinear and a QuantizeLinear of the whole activation around it. Else the float Clip."""
        grid = x.grid
        if grid is None or x.stored is None:
            return self.keep_grid("Clip", x, hint, extra=[self._float(0.0, hint), self._float(6.0, hint)])
        low, high = (self.constant(f"{hint}.code", np.array(_code(value, grid), dtype=np.uint8))
                     for value in (0.0, 6.0))
        (clamped,) = self.node("Clip", [x.stored, low, high], hint)
        (restored,) = self.node("DequantizeLinear", [clamped, grid.scale, grid.zero_point], hint)
        return Value(restored, grid, x.rank, clamped)

    # --------------------------------------------------------------------------------- functions

    def call_function(self, node: fx.Node, args: list[Any], kwargs: dict[str, Any]) -> Any:
        target, hint = node.target, node.name
        if target is operator.getitem:
            if isinstance(args[0], (list, tuple)):
                return args[0][args[1]]
            if isinstance(args[0], Value):
                raise NotImplementedError(f"{hint}: qzoo's ONNX writer does not index tensors ({args[1]})")
            return self.shape_item(args[0], args[1], hint)
        if target is torch.unsqueeze:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            (out,) = self.node("Unsqueeze", [args[0].name, self.ints([dim], hint)], hint)
            return Value(out, args[0].grid, args[0].rank + 1)
        if target is operator.floordiv:
            return self.int_op("Div", args, hint)
        if target in (operator.mul, operator.add, operator.sub) and _is_size(args):
            op = {operator.mul: "Mul", operator.add: "Add", operator.sub: "Sub"}[target]
            return self.int_op(op, args, hint)
        if target in (torch.add, operator.add, torch.mul, operator.mul):
            op = "Add" if target in (torch.add, operator.add) else "Mul"
            (out,) = self.node(op, [self.operand(args[0], hint), self.operand(args[1], hint)], hint)
            return Value(out, None, max(arg.rank for arg in args if isinstance(arg, Value)))
        if target in (torch.relu, torch.nn.functional.relu):
            (out,) = self.node("Relu", [args[0].name], hint)
            return Value(out, args[0].grid, args[0].rank)
        if target is torch.cat:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            (out,) = self.node("Concat", [value.name for value in args[0]], hint, axis=dim)
            return Value(out, None, args[0][0].rank)
        if target is torch.flatten:
            return self.flatten(args[0], kwargs.get("start_dim", args[1] if len(args) > 1 else 0), hint)
        if target is torch.transpose:
            return self.transpose(args[0], args[1], args[2], hint)
        if target is torch.nn.functional.adaptive_avg_pool2d:
            _require_global(args[1] if len(args) > 1 else kwargs["output_size"], hint)
            return self.keep_grid("GlobalAveragePool", args[0], hint)
        if target in (torch.nn.functional.avg_pool2d, torch.nn.functional.max_pool2d):
            return self.functional_pool(target, node, args, kwargs, hint)
        if getattr(target, "__name__", "") == "stochastic_depth":  # identity in eval mode
            return args[0]
        raise NotImplementedError(f"{node.name}: qzoo's ONNX writer has no form for {target}")

    def operand(self, value: Any, hint: str) -> str:
        return value.name if isinstance(value, Value) else self._float(float(value), hint)

    def functional_pool(self, target: Any, node: fx.Node, args: list[Any], kwargs: dict[str, Any], hint: str) -> Value:
        signature = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad") \
            if target is torch.nn.functional.avg_pool2d else ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
        options = dict(zip(signature, args[1:], strict=False)) | kwargs
        pool = (nn.AvgPool2d if target is torch.nn.functional.avg_pool2d else nn.MaxPool2d)(**options)
        if isinstance(pool, nn.AvgPool2d):
            return self.keep_grid("AveragePool", args[0], hint, **_pool_attributes(pool),
                                  count_include_pad=int(pool.count_include_pad))
        return self.keep_grid("MaxPool", args[0], hint, **_pool_attributes(pool))

    def global_mean(self, x: Value, keep: bool, hint: str) -> Value:
        """``x.mean([2, 3])`` as GlobalAveragePool (then Flatten unless ``keepdim``): ONNX Runtime runs that
        pattern as one QLinearGlobalAveragePool on the int8 NHWC tensor, where a ReduceMean stays float
        behind a transpose and a DequantizeLinear."""
        pooled = self.keep_grid("GlobalAveragePool", x, hint)
        return pooled if keep else self.flatten(pooled, 1, hint)

    def flatten(self, x: Value, start_dim: int, hint: str) -> Value:
        if start_dim != 1:
            raise NotImplementedError(f"{hint}: flatten from dim {start_dim}")
        return self.keep_grid("Flatten", x, hint, rank=2, axis=1)

    def channel_shuffle(self, x: Value, shuffle: _Shuffle, hint: str) -> Value:
        """A channel shuffle as one Gather of channels on the int8 tensor (codes move unchanged): output channel
        ``j * groups + i`` is input channel ``i * (channels // groups) + j``, as the view to (groups, channels //
        groups), the transpose and the view back order them, at any batch, height and width."""
        order = np.arange(shuffle.channels).reshape(shuffle.groups, -1).T.reshape(-1)
        return self.keep_grid("Gather", x, hint, extra=[self.ints(order, hint)], axis=1)

    def transpose(self, x: Value, first: int, second: int, hint: str) -> Value:
        order = list(range(x.rank))
        order[first], order[second] = order[second], order[first]
        return self.keep_grid("Transpose", x, hint, perm=order)

    # ------------------------------------------------------------------- sizes as int64 tensors

    def shape_item(self, shape: _Size, index: int, hint: str) -> _Size:
        """Item ``index`` of a whole shape, written only where a computation needs it alone (``size_name``):
        a reshape takes runs of items as slices of the shape instead."""
        if shape.name not in self._ranks:
            raise NotImplementedError(f"{hint}: qzoo's ONNX writer indexes whole shapes only")
        return _Size(None, shape.name, index % self._ranks[shape.name])

    def size_name(self, size: _Size, hint: str) -> str:
        """The 1-D int64 tensor of ``size`` (an item of a shape is gathered once, on first use)."""
        if size.name is not None:
            return size.name
        key = (size.shape, size.index)
        if key not in self._items:
            (self._items[key],) = self.node("Gather", [size.shape, self.ints([size.index], hint)], hint, axis=0)
        return self._items[key]

    def int_op(self, op: str, args: list[Any], hint: str) -> Any:
        operands = [self.size_name(value, hint) if isinstance(value, _Size) else self.ints([int(value)], hint)
                    for value in args]
        (out,) = self.node(op, operands, hint)
        return _Size(out, whole=any(isinstance(value, _Size) and value.whole for value in args))

    def reshape_target(self, x: Value, sizes: Iterable[Any], hint: str) -> str:
        """The shape tensor of ``x.view(*sizes)`` with as few nodes as the sizes allow: an item of ``x``'s own shape
        in its own place as 0 (Reshape copies it), runs of consecutive items of one shape as one slice of it (the
        whole shape as it is), a lone computed size as -1 (Reshape infers it), constants together; one Concat if
        more than one part. ``x.view(batch, groups, channels // groups, height, width)`` so becomes
        ``[0, groups, -1] + shape[2:]`` and the view back the shape it started from (a view, transpose and view
        back that form a channel shuffle are one Gather instead: :func:`_channel_shuffles`)."""
        parts: list[tuple[Any, ...]] = []  # ("const", [ints]), ("run", shape, start, end), ("tensor", name, whole)
        for position, size in enumerate(sizes):
            if isinstance(size, _Size) and size.name is None:
                if size.index == position and self._sources[size.shape] == (x.stored or x.name):
                    parts.append(("const", [0]))
                elif parts and parts[-1][0] == "run" and parts[-1][1] == size.shape and parts[-1][3] == size.index:
                    parts[-1] = ("run", size.shape, parts[-1][2], size.index + 1)
                else:
                    parts.append(("run", size.shape, size.index, size.index + 1))
            elif isinstance(size, _Size):
                parts.append(("tensor", size.name, size.whole))
            else:
                parts.append(("const", [int(size)]))
        computed = [index for index, part in enumerate(parts) if part[0] == "tensor" and not part[2]]
        if len(computed) == 1 and not any(part[0] == "const" and -1 in part[1] for part in parts):
            parts[computed[0]] = ("const", [-1])
        names: list[str] = []
        constants: list[int] = []
        for part in parts + [("end",)]:
            if part[0] == "const":
                constants += part[1]
                continue
            if constants:
                names.append(self.ints(constants, hint))
                constants = []
            if part[0] == "tensor":
                names.append(part[1])
            elif part[0] == "run" and part[2] == 0 and part[3] == self._ranks[part[1]]:
                names.append(part[1])
            elif part[0] == "run":
                (piece,) = self.node("Slice", [part[1], self.ints([part[2]], hint), self.ints([part[3]], hint),
                                               self.ints([0], hint)], hint)
                names.append(piece)
        if len(names) == 1:
            return names[0]
        (shape,) = self.node("Concat", names, hint, axis=0)
        return shape

    def call_method(self, node: fx.Node, args: list[Any], kwargs: dict[str, Any]) -> Any:
        method, x, hint = str(node.target), args[0], node.name
        if method == "size":
            shape = _Size(self.shape(x, hint), whole=True)
            return shape if len(args) == 1 else self.shape_item(shape, args[1], hint)
        if method in ("contiguous", "clone"):
            return x
        if method in ("view", "reshape"):
            sizes = _view_sizes(args)
            return self.keep_grid("Reshape", x, hint, extra=[self.reshape_target(x, sizes, hint)], rank=len(sizes))
        if method == "transpose":
            return self.transpose(x, args[1], args[2], hint)
        if method == "flatten":
            return self.flatten(x, kwargs.get("start_dim", args[1] if len(args) > 1 else 0), hint)
        if method == "chunk":
            chunks, dim = args[1], kwargs.get("dim", args[2] if len(args) > 2 else 0)
            outs = self.node("Split", [x.name], hint, outputs=chunks, axis=dim)
            return [self.requantize(out, x.grid, hint, x.rank) if x.grid is not None else Value(out, None, x.rank)
                    for out in outs]
        if method == "mean":
            dims = list(args[1] if len(args) > 1 else kwargs["dim"])
            keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
            if x.rank == 4 and sorted(dims) == [2, 3]:
                return self.global_mean(x, keep, hint)
            return self.keep_grid("ReduceMean", x, hint, rank=x.rank if keep else x.rank - len(dims), axes=dims,
                                  keepdims=int(keep))
        raise NotImplementedError(f"{node.name}: qzoo's ONNX writer has no form for the method {method!r}")


def _code(value: float, grid: Grid) -> int:
    """The uint8 code QuantizeLinear gives ``value`` on ``grid`` (float32 division, ties to even, saturated)."""
    quotient = np.float32(value) / np.float32(grid.scale_value)
    return int(np.clip(np.rint(quotient) + grid.zero_point_value, 0, 255))


def _module_of(modules: dict[str, nn.Module], node: fx.Node) -> nn.Module | None:
    """The module ``node`` calls, if it calls one."""
    return modules.get(str(node.target)) if node.op == "call_module" else None


def _conv_of(modules: dict[str, nn.Module], node: fx.Node) -> nn.Conv2d | None:
    """The Conv2d a call_module ``node`` runs (alone or first in a fused block), if it runs one."""
    module = _module_of(modules, node)
    inner = module[0] if module is not None and quantization.is_fused_block(module) else module
    return inner if isinstance(inner, nn.Conv2d) else None


def _same_convs(modules: dict[str, nn.Module], graph: fx.Graph) -> tuple[dict[str, int], dict[fx.Node, fx.Node]]:
    """EfficientNet-Lite's TensorFlow "SAME" strided convs, each to be one ONNX Conv with ``auto_pad="SAME_UPPER"``
    (ONNX Runtime then computes the pads from each input's size, the smaller half before, as TensorFlow does): a
    :class:`SamePad2d` whose only user is an unpadded conv of its kernel and stride, and a stride-1 conv padded by
    ``kernel // 2`` whose outputs a :class:`SameSubsample2d` picks (through BatchNorm's Identity and ReLU6
    modules, elementwise, each the only user of the one before): the same outputs, and the subsampled conv
    computes only the outputs kept. Returns the convs' names with their stride, and the pad and subsample
    nodes with the node whose value each passes on."""
    strides, passed = {}, {}
    for node in graph.nodes:
        module = _module_of(modules, node)
        if isinstance(module, SamePad2d) and len(node.users) == 1:
            (user,) = node.users
            conv = _conv_of(modules, user)
            if conv is not None and conv.padding == (0, 0) and conv.stride == (module.stride,) * 2 \
                    and conv.kernel_size == (module.kernel_size,) * 2 and conv.dilation == (1, 1):
                strides[str(user.target)], passed[node] = module.stride, node.args[0]
        elif isinstance(module, SameSubsample2d):
            source = node.args[0]
            while len(source.users) == 1 and isinstance(_module_of(modules, source),
                                                         (nn.Identity, nn.ReLU6, quantization.ReLU6AsRange)):
                source = source.args[0]
            conv = _conv_of(modules, source)
            half = module.kernel_size // 2
            if conv is not None and len(source.users) == 1 and conv.stride == (1, 1) and conv.padding == (half, half) \
                    and conv.kernel_size == (module.kernel_size,) * 2 and conv.dilation == (1, 1):
                strides[str(source.target)], passed[node] = module.stride, node.args[0]
    return strides, passed


@dataclass(frozen=True)
class _Shuffle:
    """A channel shuffle found in the traced graph: its first view and the nodes after it that the shuffle
    stands for (the transpose, a ``contiguous``, the view back), the channel count and the groups."""

    first: fx.Node
    rest: tuple[fx.Node, ...]
    channels: int
    groups: int


class _ShapeProbe(fx.Interpreter):
    """Runs the traced skeleton once and records each node's output shape (its observers see the probe's
    image, which changes nothing written: the writer reads no observer's statistics)."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}

    def run_node(self, node: fx.Node) -> Any:
        result = super().run_node(node)
        if isinstance(result, Tensor):
            self.shapes[node] = tuple(result.shape)
        return result


def _view_sizes(args: Any) -> Any:
    """The sizes of ``x.view(*sizes)`` or ``x.view(sizes)`` from its arguments ``(x, ...)``."""
    return args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]


def _is_view(node: fx.Node, rank: int | None = None) -> bool:
    """Whether ``node`` is ``x.view(...)`` or ``x.reshape(...)`` (to ``rank`` sizes, if given)."""
    if node.op != "call_method" or node.target not in ("view", "reshape"):
        return False
    return rank is None or len(_view_sizes(node.args)) == rank


def _is_channel_transpose(node: fx.Node) -> bool:
    """Whether ``node`` swaps dims 1 and 2 (``x.transpose(1, 2)`` or ``torch.transpose``), as a shuffle does."""
    dims = sorted(node.args[1:3]) if len(node.args) == 3 else []
    return (node.op == "call_method" and node.target == "transpose"
            or node.op == "call_function" and node.target is torch.transpose) and dims == [1, 2]


def _channel_shuffles(skeleton: nn.Module, graph: fx.Graph) -> list[_Shuffle]:
    """ShuffleNet's channel shuffles in ``graph``: a view of a (batch, channels, height, width) tensor to (batch,
    groups, channels // groups, height, width), a transpose of dims 1 and 2, a view back to the shape it came
    from, each step the only user of the one before. Shapes come from one probe of the skeleton on a 224 x 224
    image, only where the graph has a 5-D view; channels are fixed by the weights, so the shuffle is the same
    order of channels at every size."""
    if not any(_is_view(node, rank=5) for node in graph.nodes):
        return []
    probe = _ShapeProbe(fx.GraphModule(skeleton, graph))
    with torch.no_grad():
        probe.run(torch.zeros(1, 3, 224, 224))
    shapes, shuffles = probe.shapes, []
    for first in graph.nodes:
        source = first.args[0] if _is_view(first, rank=5) else None
        if not isinstance(source, fx.Node) or len(shapes.get(source, ())) != 4 or len(first.users) != 1:
            continue
        batch, channels, height, width = shapes[source]
        groups = shapes[first][1] if len(shapes[first]) == 5 else 0
        if not groups or shapes[first] != (batch, groups, channels // groups, height, width):
            continue
        rest, node = [], first
        while len(rest) < 3 and len(node.users) == 1 and not (rest and _is_view(rest[-1])):
            (node,) = node.users
            rest.append(node)
        steps = [step for step in rest if not (step.op == "call_method" and step.target == "contiguous")]
        if (len(steps) == 2 and _is_channel_transpose(steps[0]) and _is_view(steps[1])
                and shapes[steps[1]] == shapes[source]):
            shuffles.append(_Shuffle(first, tuple(rest), channels, groups))
    return shuffles


@dataclass(frozen=True)
class _Size:
    """A size (or a shape) computed in the graph, as a 1-D int64 tensor ``name``; an item of a whole shape has
    no tensor of its own until one is needed (``name`` None: item ``index`` of the shape tensor ``shape``);
    ``whole``: a shape or a computation on one, rather than a single size."""

    name: str | None
    shape: str | None = None
    index: int | None = None
    whole: bool = False


def _is_size(args: Iterable[Any]) -> bool:
    return any(isinstance(arg, _Size) for arg in args) and not any(isinstance(arg, Value) for arg in args)


def _pair(value: int | tuple[int, ...]) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [value, value]


def _conv_attributes(conv: nn.Conv2d) -> dict[str, Any]:
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise NotImplementedError(f"conv padding {conv.padding!r} ({conv.padding_mode})")
    top, left = conv.padding
    return {"kernel_shape": list(conv.kernel_size), "strides": list(conv.stride), "dilations": list(conv.dilation),
            "pads": [top, left, top, left], "group": conv.groups}


def _pool_attributes(pool: nn.MaxPool2d | nn.AvgPool2d) -> dict[str, Any]:
    kernel = _pair(pool.kernel_size)
    stride = _pair(pool.stride if pool.stride else pool.kernel_size)
    top, left = _pair(pool.padding)
    attributes = {"kernel_shape": kernel, "strides": stride, "pads": [top, left, top, left],
                  "ceil_mode": int(pool.ceil_mode)}
    if isinstance(pool, nn.MaxPool2d) and _pair(pool.dilation) != [1, 1]:
        attributes["dilations"] = _pair(pool.dilation)
    return attributes


def _require_global(output_size: Any, hint: str) -> None:
    if _pair(output_size) != [1, 1]:
        raise NotImplementedError(f"{hint}: adaptive average pooling to {output_size} (only to 1x1)")


def write_onnx(skeleton: nn.Module, tensors: dict[str, Tensor], entries: dict[str, Any], *,
               producer: str = "qzoo") -> bytes:
    """The ONNX (QDQ) file of an int8 model: ``skeleton`` is the model's PTQ-prepared float structure
    (:func:`qzoo.quantization.prepare_ptq` of its architecture, float layers as saved), ``tensors`` and
    ``entries`` its int8 state as :func:`qzoo.serialization.int8_tensors` gives them. Input ``images``
    (float32, any batch, height and width), output ``logits``."""
    import onnx

    skeleton.eval()
    graph = _Tracer().trace(skeleton)
    writer = _Writer(skeleton, tensors, entries)
    shuffles = {shuffle.first: shuffle for shuffle in _channel_shuffles(skeleton, graph)}
    writer.same_strides, passed = _same_convs(writer.modules, graph)
    passed |= {node: shuffle.first for shuffle in shuffles.values() for node in shuffle.rest}
    output = None
    for node in graph.nodes:
        args = fx.node.map_arg(node.args, lambda n: writer.values[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: writer.values[n])
        if node in shuffles:
            writer.values[node] = writer.channel_shuffle(args[0], shuffles[node], node.name)
        elif node in passed:  # a step a shuffle or a SAME conv stands for: the value it passes on
            writer.values[node] = writer.values[passed[node]]
        elif node.op == "placeholder":
            writer.values[node] = Value("images")
        elif node.op == "call_module":
            writer.values[node] = writer.call_module(node, writer.modules[str(node.target)], list(args))
        elif node.op == "call_function":
            writer.values[node] = writer.call_function(node, list(args), dict(kwargs))
        elif node.op == "call_method":
            writer.values[node] = writer.call_method(node, list(args), dict(kwargs))
        elif node.op == "get_attr":
            writer.values[node] = writer.float_buffer(skeleton, str(node.target))
        elif node.op == "output":
            output = args[0]
        else:
            raise NotImplementedError(f"{node.name}: fx node kind {node.op!r}")
    if not isinstance(output, Value) or output.grid is not None:
        raise ValueError("the model's output is not a float tensor after a DeQuantStub")
    helper, proto = writer.helper, writer.proto
    writer.nodes.append(helper.make_node("Identity", [output.name], ["logits"], name="logits"))
    writer.drop_unused()
    model = helper.make_model(
        helper.make_graph(writer.nodes, "qzoo_int8",
                          [helper.make_tensor_value_info("images", proto.FLOAT, ["batch", 3, "height", "width"])],
                          [helper.make_tensor_value_info("logits", proto.FLOAT, ["batch", None])],
                          writer.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer)
    onnx.checker.check_model(model)
    return model.SerializeToString()
