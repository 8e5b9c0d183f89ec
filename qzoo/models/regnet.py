"""Quantizable RegNetX and RegNetY (Radosavovic et al., 2020), every size torchvision has.

torchvision has no quantizable RegNet; this one changes its float RegNet only where int8 needs
it (float outputs are equal, tested):

- the residual sum and the ReLU after it become one ``FloatFunctional.add_relu`` (a quantized
  sum needs its own output scale; the fused kernel requantizes once). The block's ``activation``
  module stays, unused and stateless, so module names equal torchvision's;
- RegNetY's squeeze-excitation multiplies through ``FloatFunctional.mul``
  (:class:`~qzoo.models._blocks.QuantizableSqueezeExcitation`; its sigmoid gate runs as a
  quantized op with the fixed range [0, 1]); torchvision builds it inside the bottleneck with
  no SE argument, so it is rewrapped, keeping its modules;
- ReLUs become separate non-in-place modules, fused with their conv and BatchNorm;
- ``QuantStub``/``DeQuantStub`` at the ends and ``fuse_model``.

Module names equal torchvision's, so its float checkpoints load strictly. Only ReLU is
supported as the activation (it is what every torchvision RegNet uses, and what fuses).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import regnet as tv
from torchvision.ops.misc import Conv2dNormActivation

from ..quantization import FloatFunctional, QuantizableModel, fusion_step
from ._blocks import (QuantizableSqueezeExcitation, fuse_conv_norm_activation, own_block, plain_relus,
                      quantizable_squeeze_excitation)
from ._factory import register_model

__all__ = ["QuantizableRegNet", "QuantizableResBottleneckBlock", "QuantizableSqueezeExcitation",
           "regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf",
           "regnet_x_16gf", "regnet_x_32gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf",
           "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf"]


class QuantizableResBottleneckBlock(tv.ResBottleneckBlock):
    """RegNet's residual bottleneck: quantizable squeeze-excitation (Y) and the add fused with its ReLU."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "se" in self.f._modules:
            self.f.se = quantizable_squeeze_excitation(self.f.se)
        self.skip_add_relu = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.proj is None else self.proj(x)
        return self.skip_add_relu.add_relu(shortcut, self.f(x))


class QuantizableRegNet(QuantizableModel, tv.RegNet):
    """RegNet with quantizable blocks, quant/dequant stubs and ``fuse_model``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        own_block(kwargs, "block_type", QuantizableResBottleneckBlock, "QuantizableRegNet")
        if kwargs.setdefault("activation", nn.ReLU) is not nn.ReLU:
            raise ValueError("QuantizableRegNet fuses ReLU into its convs and residual adds: drop activation=")
        super().__init__(*args, **kwargs)
        plain_relus(self)

    def _forward_impl(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.trunk_output(self.stem(x)))
        return self.fc(x.flatten(start_dim=1))

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse every conv-bn(-relu) and each squeeze's conv-relu; ``is_qat=None`` follows ``self.training``."""
        for module in self.modules():
            if isinstance(module, Conv2dNormActivation):
                fuse_conv_norm_activation(module, is_qat)
            elif isinstance(module, QuantizableSqueezeExcitation):
                module.fuse_model(is_qat)


def _regnet(kwargs: dict[str, Any], **block_params: Any) -> QuantizableRegNet:
    with torch.device("cpu"):  # the widths are computed with tensors: also when building on the meta device
        params = tv.BlockParams.from_init_params(**block_params)
    return QuantizableRegNet(params, **kwargs)


ARGUMENTS = "num_classes, stem_width, norm_layer"


@register_model(float_weights=tv.RegNet_X_400MF_Weights, arguments=ARGUMENTS)
def regnet_x_400mf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetX-400MF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=22, w_0=24, w_a=24.48, w_m=2.54, group_width=16)


@register_model(float_weights=tv.RegNet_X_800MF_Weights, arguments=ARGUMENTS)
def regnet_x_800mf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetX-800MF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=16, w_0=56, w_a=35.73, w_m=2.28, group_width=16)


@register_model(float_weights=tv.RegNet_X_1_6GF_Weights, arguments=ARGUMENTS)
def regnet_x_1_6gf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetX-1.6GF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=18, w_0=80, w_a=34.01, w_m=2.25, group_width=24)


@register_model(float_weights=tv.RegNet_X_3_2GF_Weights, arguments=ARGUMENTS)
def regnet_x_3_2gf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetX-3.2GF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=25, w_0=88, w_a=26.31, w_m=2.25, group_width=48)


@register_model(float_weights=tv.RegNet_X_8GF_Weights, arguments=ARGUMENTS)
def regnet_x_8gf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetX-8GF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=23, w_0=80, w_a=49.56, w_m=2.88, group_width=120)


@register_model(float_weights=tv.RegNet_X_16GF_Weights, arguments=ARGUMENTS)
def regnet_x_16gf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetX-16GF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=22, w_0=216, w_a=55.59, w_m=2.1, group_width=128)


@register_model(float_weights=tv.RegNet_X_32GF_Weights, arguments=ARGUMENTS)
def regnet_x_32gf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetX-32GF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=23, w_0=320, w_a=69.86, w_m=2.0, group_width=168)


@register_model(float_weights=tv.RegNet_Y_400MF_Weights, arguments=ARGUMENTS)
def regnet_y_400mf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetY-400MF (Radosavovic et al., 2020): RegNetX with squeeze-excitation."""
    return _regnet(kwargs, depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8, se_ratio=0.25)


@register_model(float_weights=tv.RegNet_Y_800MF_Weights, arguments=ARGUMENTS)
def regnet_y_800mf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetY-800MF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=14, w_0=56, w_a=38.84, w_m=2.4, group_width=16, se_ratio=0.25)


@register_model(float_weights=tv.RegNet_Y_1_6GF_Weights, arguments=ARGUMENTS)
def regnet_y_1_6gf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetY-1.6GF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=27, w_0=48, w_a=20.71, w_m=2.65, group_width=24, se_ratio=0.25)


@register_model(float_weights=tv.RegNet_Y_3_2GF_Weights, arguments=ARGUMENTS)
def regnet_y_3_2gf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetY-3.2GF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=21, w_0=80, w_a=42.63, w_m=2.66, group_width=24, se_ratio=0.25)


@register_model(float_weights=tv.RegNet_Y_8GF_Weights, arguments=ARGUMENTS)
def regnet_y_8gf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetY-8GF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=17, w_0=192, w_a=76.82, w_m=2.19, group_width=56, se_ratio=0.25)


@register_model(float_weights=tv.RegNet_Y_16GF_Weights, arguments=ARGUMENTS)
def regnet_y_16gf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetY-16GF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=18, w_0=200, w_a=106.23, w_m=2.48, group_width=112, se_ratio=0.25)


@register_model(float_weights=tv.RegNet_Y_32GF_Weights, arguments=ARGUMENTS)
def regnet_y_32gf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetY-32GF (Radosavovic et al., 2020)."""
    return _regnet(kwargs, depth=20, w_0=232, w_a=115.89, w_m=2.53, group_width=232, se_ratio=0.25)


@register_model(float_weights=tv.RegNet_Y_128GF_Weights, arguments=ARGUMENTS)
def regnet_y_128gf(**kwargs: Any) -> QuantizableRegNet:
    """RegNetY-128GF (Radosavovic et al., 2020; weights from SWAG, Singh et al., 2022)."""
    return _regnet(kwargs, depth=27, w_0=456, w_a=160.83, w_m=2.52, group_width=264, se_ratio=0.25)
