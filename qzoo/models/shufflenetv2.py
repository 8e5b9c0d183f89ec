"""Quantizable ShuffleNetV2 (Ma et al., 2018), widths 0.5, 1.0, 1.5 and 2.0.

Differences from torchvision's float ShuffleNetV2 (the same as torchvision's
``QuantizableShuffleNetV2``, so int8 outputs match it bit for bit):

- the two branches join through ``FloatFunctional.cat``: both halves are requantized to one
  output scale (``torch.cat`` of int8 tensors with different scales has no meaning);
- ReLUs become separate non-in-place modules, fused into their convs;
- ``QuantStub``/``DeQuantStub`` at the ends and ``fuse_model``: conv-bn-relu in the stem, the
  last conv and both branches, conv-bn for the depthwise and projecting convs.

The channel shuffle (a reshape, transpose and copy) and the split run on int8 tensors as they
are. Module names equal torchvision's, so float and int8 torchvision checkpoints load strictly.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchvision.models import shufflenetv2 as tv
from torchvision.models.quantization import shufflenetv2 as tvq

from ..quantization import FloatFunctional, QuantizableModel, fuse_modules, fusion_step
from ._blocks import own_block, plain_relus
from ._factory import register_model

__all__ = ["QuantizableShuffleNetV2", "QuantizableShuffleNetV2InvertedResidual", "shufflenet_v2_x0_5",
           "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]


class QuantizableShuffleNetV2InvertedResidual(tv.InvertedResidual):
    """ShuffleNetV2 unit whose branches join through ``FloatFunctional.cat``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cat = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            kept, processed = x.chunk(2, dim=1)
            out = self.cat.cat([kept, self.branch2(processed)], dim=1)
        else:
            out = self.cat.cat([self.branch1(x), self.branch2(x)], dim=1)
        return tv.channel_shuffle(out, 2)

    def fuse_model(self, is_qat: bool) -> None:
        """branch1: depthwise conv-bn, then conv-bn-relu; branch2: conv-bn-relu, depthwise conv-bn, conv-bn-relu."""
        if len(self.branch1) > 0:
            fuse_modules(self.branch1, [["0", "1"], ["2", "3", "4"]], is_qat)
        fuse_modules(self.branch2, [["0", "1", "2"], ["3", "4"], ["5", "6", "7"]], is_qat)


class QuantizableShuffleNetV2(QuantizableModel, tv.ShuffleNetV2):
    """ShuffleNetV2 with quantizable units, quant/dequant stubs and ``fuse_model``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        own_block(kwargs, "inverted_residual", QuantizableShuffleNetV2InvertedResidual, "QuantizableShuffleNetV2")
        super().__init__(*args, **kwargs)
        plain_relus(self)

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse the stem's and the last conv's conv-bn-relu and every unit; ``is_qat=None`` follows ``self.training``."""
        for stage in (self.conv1, self.conv5):
            fuse_modules(stage, [["0", "1", "2"]], is_qat)
        for module in self.modules():
            if isinstance(module, QuantizableShuffleNetV2InvertedResidual):
                module.fuse_model(is_qat)


STAGES_REPEATS = [4, 8, 4]  # units per stage, as in the paper's Table 5


def _shufflenet_v2(stages_out_channels: list[int], kwargs: dict[str, Any]) -> QuantizableShuffleNetV2:
    return QuantizableShuffleNetV2(STAGES_REPEATS, stages_out_channels, **kwargs)


@register_model(float_weights=tv.ShuffleNet_V2_X0_5_Weights, int8_weights=tvq.ShuffleNet_V2_X0_5_QuantizedWeights,
                arguments="num_classes")
def shufflenet_v2_x0_5(**kwargs: Any) -> QuantizableShuffleNetV2:
    """ShuffleNetV2 0.5x (Ma et al., 2018)."""
    return _shufflenet_v2([24, 48, 96, 192, 1024], kwargs)


@register_model(float_weights=tv.ShuffleNet_V2_X1_0_Weights, int8_weights=tvq.ShuffleNet_V2_X1_0_QuantizedWeights,
                arguments="num_classes")
def shufflenet_v2_x1_0(**kwargs: Any) -> QuantizableShuffleNetV2:
    """ShuffleNetV2 1.0x (Ma et al., 2018)."""
    return _shufflenet_v2([24, 116, 232, 464, 1024], kwargs)


@register_model(float_weights=tv.ShuffleNet_V2_X1_5_Weights, int8_weights=tvq.ShuffleNet_V2_X1_5_QuantizedWeights,
                arguments="num_classes")
def shufflenet_v2_x1_5(**kwargs: Any) -> QuantizableShuffleNetV2:
    """ShuffleNetV2 1.5x (Ma et al., 2018)."""
    return _shufflenet_v2([24, 176, 352, 704, 1024], kwargs)


@register_model(float_weights=tv.ShuffleNet_V2_X2_0_Weights, int8_weights=tvq.ShuffleNet_V2_X2_0_QuantizedWeights,
                arguments="num_classes")
def shufflenet_v2_x2_0(**kwargs: Any) -> QuantizableShuffleNetV2:
    """ShuffleNetV2 2.0x (Ma et al., 2018)."""
    return _shufflenet_v2([24, 244, 488, 976, 2048], kwargs)
