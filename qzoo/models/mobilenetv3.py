"""Quantizable MobileNetV3, large and small (Howard et al., 2019).

Differences from torchvision's float MobileNetV3 (the same as torchvision's
``QuantizableMobileNetV3``, so int8 outputs match it bit for bit):

- the squeeze-excitation gate multiplies through ``FloatFunctional.mul``
  (:class:`~qzoo.models._blocks.QuantizableSqueezeExcitation`), and the residual add through
  ``FloatFunctional.add``: a quantized product or sum needs its own output scale;
- ReLUs become separate non-in-place modules; Hardswish and the gate's Hardsigmoid stay, as
  quantized ops of their own (torch has int8 kernels for both; neither fuses into the conv);
- ``QuantStub``/``DeQuantStub`` at the ends and ``fuse_model``: conv-bn(-relu) everywhere, and
  the squeeze's first conv with its ReLU.

Module names equal torchvision's, so float and int8 torchvision checkpoints load strictly.
torchvision publishes MobileNetV3-Large int8 weights as a QAT checkpoint (its workaround for
pytorch/vision#5890); ``quantize=True`` loads it into the QAT-prepared model and converts, as
torchvision does.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchvision.models import mobilenetv3 as tv
from torchvision.models.quantization import mobilenetv3 as tvq
from torchvision.ops.misc import Conv2dNormActivation

from ..quantization import FloatFunctional, QuantizableModel, fusion_step
from ._blocks import QuantizableSqueezeExcitation, fuse_conv_norm_activation, own_block, plain_relus
from ._factory import register_model

__all__ = ["QuantizableMobileNetV3", "QuantizableMobileNetV3InvertedResidual", "QuantizableSqueezeExcitation",
           "mobilenet_v3_large", "mobilenet_v3_small"]


def _squeeze_excitation(*args: Any, **kwargs: Any) -> QuantizableSqueezeExcitation:
    return QuantizableSqueezeExcitation(*args, scale_activation=nn.Hardsigmoid, **kwargs)


class QuantizableMobileNetV3InvertedResidual(tv.InvertedResidual):
    """MobileNetV3's inverted residual with a quantizable squeeze-excitation and a ``FloatFunctional.add`` skip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, se_layer=_squeeze_excitation, **kwargs)
        self.skip_add = FloatFunctional()

    def forward(self, input: Tensor) -> Tensor:
        if self.use_res_connect:
            return self.skip_add.add(input, self.block(input))
        return self.block(input)


class QuantizableMobileNetV3(QuantizableModel, tv.MobileNetV3):
    """MobileNetV3 with quantizable blocks, quant/dequant stubs and ``fuse_model``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        own_block(kwargs, "block", QuantizableMobileNetV3InvertedResidual, "QuantizableMobileNetV3")
        super().__init__(*args, **kwargs)
        plain_relus(self)

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse every conv-bn(-relu) and each squeeze's conv-relu; ``is_qat=None`` follows ``self.training``."""
        for module in self.modules():
            if type(module) is Conv2dNormActivation:
                fuse_conv_norm_activation(module, is_qat)
            elif isinstance(module, QuantizableSqueezeExcitation):
                module.fuse_model(is_qat)


def _mobilenet_v3(arch: str, kwargs: dict[str, Any]) -> QuantizableMobileNetV3:
    configuration = {key: kwargs.pop(key) for key in ("width_mult", "reduced_tail", "dilated") if key in kwargs}
    inverted_residual_setting, last_channel = tv._mobilenet_v3_conf(arch, **configuration)
    return QuantizableMobileNetV3(inverted_residual_setting, last_channel, **kwargs)


ARGUMENTS = "num_classes, width_mult, reduced_tail, dilated, dropout"


@register_model(float_weights=tv.MobileNet_V3_Large_Weights, int8_weights=tvq.MobileNet_V3_Large_QuantizedWeights,
                arguments=ARGUMENTS)
def mobilenet_v3_large(**kwargs: Any) -> QuantizableMobileNetV3:
    """MobileNetV3-Large (Howard et al., 2019): inverted residuals with squeeze-excitation and Hardswish."""
    return _mobilenet_v3("mobilenet_v3_large", kwargs)


@register_model(float_weights=tv.MobileNet_V3_Small_Weights, arguments=ARGUMENTS)
def mobilenet_v3_small(**kwargs: Any) -> QuantizableMobileNetV3:
    """MobileNetV3-Small (Howard et al., 2019), for low-latency targets."""
    return _mobilenet_v3("mobilenet_v3_small", kwargs)
