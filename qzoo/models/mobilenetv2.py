"""Quantizable MobileNetV2.

Differences from torchvision's float MobileNetV2: the skip connection goes through
``FloatFunctional.add`` (a quantized add has its own output scale), every ReLU6 becomes a
plain non-in-place ReLU (ReLU fuses into the conv; a clamp at 6 would waste int8 range),
and the model gains ``QuantStub``/``DeQuantStub`` and ``fuse_model``. Module names equal
torchvision's, so float and int8 torchvision checkpoints load strictly.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchvision.models import mobilenetv2 as tv
from torchvision.models.quantization import mobilenetv2 as tvq
from torchvision.ops.misc import Conv2dNormActivation

from ..quantization import FloatFunctional, QuantizableModel, fuse_modules, fusion_step
from ._blocks import fuse_conv_norm_activation, own_block, plain_relus
from ._factory import register_model

__all__ = ["QuantizableInvertedResidual", "QuantizableMobileNetV2", "mobilenet_v2"]


class QuantizableInvertedResidual(tv.InvertedResidual):
    """InvertedResidual whose skip connection is a ``FloatFunctional.add``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip_add = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return self.skip_add.add(x, self.conv(x))
        return self.conv(x)

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse the expand and depthwise conv-bn-relu triples and the projecting conv-bn pair."""
        for child in self.conv:
            if isinstance(child, Conv2dNormActivation):
                fuse_conv_norm_activation(child, is_qat)
        project = len(self.conv) - 2
        fuse_modules(self.conv, [[str(project), str(project + 1)]], is_qat)


class QuantizableMobileNetV2(QuantizableModel, tv.MobileNetV2):
    """MobileNetV2 (Sandler et al., 2018) with ReLU, quant/dequant stubs and ``fuse_model``."""

    def __init__(self, *args: Any, stem_stride: int = 2, **kwargs: Any) -> None:
        own_block(kwargs, "block", QuantizableInvertedResidual, "QuantizableMobileNetV2")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride={stem_stride}: use 2 (ImageNet-size inputs) or 1 (32x32 inputs)")
        super().__init__(*args, **kwargs)
        self.features[0][0].stride = (stem_stride, stem_stride)
        plain_relus(self, relu6=True)

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse every conv-bn(-relu); ``is_qat=None`` follows ``self.training``."""
        for module in self.features:
            if isinstance(module, Conv2dNormActivation):
                fuse_conv_norm_activation(module, is_qat)
            elif isinstance(module, QuantizableInvertedResidual):
                module.fuse_model(is_qat)


@register_model(float_weights=tv.MobileNet_V2_Weights, int8_weights=tvq.MobileNet_V2_QuantizedWeights,
                arguments="num_classes, width_mult, dropout, round_nearest, inverted_residual_setting, stem_stride")
def mobilenet_v2(**kwargs: Any) -> QuantizableMobileNetV2:
    """MobileNetV2 (Sandler et al., 2018).

    ``stem_stride=1`` keeps the first conv at full resolution for 32x32 inputs (the CIFAR-10
    variant; same parameters, more compute).
    """
    return QuantizableMobileNetV2(**kwargs)
