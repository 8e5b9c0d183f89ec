"""Quantizable EfficientNet B0-B7 (Tan and Le, 2019).

torchvision has no quantizable EfficientNet, and torch has no int8 SiLU kernel
(pytorch/pytorch#73507). This one changes the float EfficientNet only where int8 needs it
(float outputs equal torchvision's to float rounding, tested):

- every SiLU becomes ``x * sigmoid(x)`` (:class:`~qzoo.models._blocks.QuantizableSiLU`): a
  quantized sigmoid with the fixed output range [0, 1], then a ``FloatFunctional.mul`` with
  its own observed scale. Exact in float; the cost is two int8 ops and one extra
  requantization per activation, where a ReLU would have fused into its conv for free. The
  alternatives were worse: a float SiLU between dequantize and quantize runs each activation
  in float32 and converts twice, and a Hardswish or ReLU in its place changes the function the
  weights were trained for;
- the squeeze-excitation multiplies through ``FloatFunctional.mul``
  (:class:`~qzoo.models._blocks.QuantizableSqueezeExcitation`, its gate a quantized sigmoid);
- the residual sum runs through ``FloatFunctional.add`` (after stochastic depth, which is the
  identity in eval mode and drops rows in QAT training as in float training);
- convs fuse with their BatchNorm (the SiLU stays a separate pair of ops);
- ``QuantStub``/``DeQuantStub`` at the ends and ``fuse_model``.

Module names of every layer with weights equal torchvision's, so its float checkpoints load
strictly. EfficientNetV2 (Fused-MBConv) is not part of this family.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import partial
from typing import Any

from torch import Tensor, nn
from torchvision.models import efficientnet as tv
from torchvision.ops.misc import Conv2dNormActivation

from ..quantization import FloatFunctional, QuantizableModel, fusion_step
from ._blocks import (QuantizableSiLU, QuantizableSqueezeExcitation, fuse_conv_norm_activation,
                      quantizable_silus)
from ._factory import register_model

__all__ = ["QuantizableEfficientNet", "QuantizableMBConv", "QuantizableSiLU", "QuantizableSqueezeExcitation",
           "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
           "efficientnet_b5", "efficientnet_b6", "efficientnet_b7"]


class QuantizableMBConv(tv.MBConv):
    """Mobile inverted bottleneck with quantizable squeeze-excitation, SiLUs and skip add."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, se_layer=QuantizableSqueezeExcitation, **kwargs)
        quantizable_silus(self)
        self.skip_add = FloatFunctional()

    def forward(self, input: Tensor) -> Tensor:
        result = self.block(input)
        if self.use_res_connect:
            return self.skip_add.add(self.stochastic_depth(result), input)
        return result


class QuantizableEfficientNet(QuantizableModel, tv.EfficientNet):
    """EfficientNet (B0-B7 settings) with quantizable blocks and SiLUs, quant/dequant stubs and ``fuse_model``."""

    def __init__(self, inverted_residual_setting: Sequence[tv.MBConvConfig], *args: Any, **kwargs: Any) -> None:
        settings = []
        for setting in inverted_residual_setting:
            if not isinstance(setting, tv.MBConvConfig):
                raise TypeError(f"QuantizableEfficientNet builds MBConv blocks only, got {type(setting).__name__} "
                                 "(EfficientNetV2's Fused-MBConv is not supported)")
            settings.append(copy.copy(setting))
            settings[-1].block = QuantizableMBConv
        super().__init__(settings, *args, **kwargs)
        quantizable_silus(self)

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse every conv-bn (SiLUs stay separate) and each squeeze's first conv; ``is_qat=None`` follows
        ``self.training``."""
        for module in self.modules():
            if isinstance(module, Conv2dNormActivation):
                fuse_conv_norm_activation(module, is_qat)
            elif isinstance(module, QuantizableSqueezeExcitation):
                module.fuse_model(is_qat)


def _efficientnet(kwargs: dict[str, Any], arch: str, width_mult: float, depth_mult: float, dropout: float,
                  tf_batchnorm: bool = False) -> QuantizableEfficientNet:
    settings, last_channel = tv._efficientnet_conf(arch, width_mult=width_mult, depth_mult=depth_mult)
    if tf_batchnorm:  # B5-B7 weights were ported from TensorFlow, with its BatchNorm settings
        kwargs.setdefault("norm_layer", partial(nn.BatchNorm2d, eps=0.001, momentum=0.01))
    return QuantizableEfficientNet(settings, kwargs.pop("dropout", dropout), last_channel=last_channel, **kwargs)


ARGUMENTS = "num_classes, dropout, stochastic_depth_prob, norm_layer"


@register_model(float_weights=tv.EfficientNet_B0_Weights, arguments=ARGUMENTS)
def efficientnet_b0(**kwargs: Any) -> QuantizableEfficientNet:
    """EfficientNet-B0 (Tan and Le, 2019): MBConv blocks with squeeze-excitation and SiLU."""
    return _efficientnet(kwargs, "efficientnet_b0", 1.0, 1.0, 0.2)


@register_model(float_weights=tv.EfficientNet_B1_Weights, arguments=ARGUMENTS)
def efficientnet_b1(**kwargs: Any) -> QuantizableEfficientNet:
    """EfficientNet-B1 (Tan and Le, 2019)."""
    return _efficientnet(kwargs, "efficientnet_b1", 1.0, 1.1, 0.2)


@register_model(float_weights=tv.EfficientNet_B2_Weights, arguments=ARGUMENTS)
def efficientnet_b2(**kwargs: Any) -> QuantizableEfficientNet:
    """EfficientNet-B2 (Tan and Le, 2019)."""
    return _efficientnet(kwargs, "efficientnet_b2", 1.1, 1.2, 0.3)


@register_model(float_weights=tv.EfficientNet_B3_Weights, arguments=ARGUMENTS)
def efficientnet_b3(**kwargs: Any) -> QuantizableEfficientNet:
    """EfficientNet-B3 (Tan and Le, 2019)."""
    return _efficientnet(kwargs, "efficientnet_b3", 1.2, 1.4, 0.3)


@register_model(float_weights=tv.EfficientNet_B4_Weights, arguments=ARGUMENTS)
def efficientnet_b4(**kwargs: Any) -> QuantizableEfficientNet:
    """EfficientNet-B4 (Tan and Le, 2019)."""
    return _efficientnet(kwargs, "efficientnet_b4", 1.4, 1.8, 0.4)


@register_model(float_weights=tv.EfficientNet_B5_Weights, arguments=ARGUMENTS)
def efficientnet_b5(**kwargs: Any) -> QuantizableEfficientNet:
    """EfficientNet-B5 (Tan and Le, 2019)."""
    return _efficientnet(kwargs, "efficientnet_b5", 1.6, 2.2, 0.4, tf_batchnorm=True)


@register_model(float_weights=tv.EfficientNet_B6_Weights, arguments=ARGUMENTS)
def efficientnet_b6(**kwargs: Any) -> QuantizableEfficientNet:
    """EfficientNet-B6 (Tan and Le, 2019)."""
    return _efficientnet(kwargs, "efficientnet_b6", 1.8, 2.6, 0.5, tf_batchnorm=True)


@register_model(float_weights=tv.EfficientNet_B7_Weights, arguments=ARGUMENTS)
def efficientnet_b7(**kwargs: Any) -> QuantizableEfficientNet:
    """EfficientNet-B7 (Tan and Le, 2019)."""
    return _efficientnet(kwargs, "efficientnet_b7", 2.0, 3.1, 0.5, tf_batchnorm=True)
