"""Quantizable Inception v3 (Szegedy et al., 2015), for 299x299 inputs.

Differences from torchvision's float Inception3 (the same as torchvision's ``QuantizableInception3``,
so int8 outputs match it bit for bit):

- every ``BasicConv2d`` gets a ReLU module of its own, fused with its conv and BatchNorm;
- every concatenation runs through a ``FloatFunctional.cat`` (``myop``; InceptionE has three:
  both split 3x3 branches and the block output), which requantizes its inputs to one scale;
- ``QuantStub``/``DeQuantStub`` around ``_forward``; ``transform_input`` runs in float before
  the stub, as one broadcast multiply-add (the same values bit for bit, fewer passes). The pools
  (``F.max_pool2d``, ``F.avg_pool2d``) run on int8 tensors as they are.

The auxiliary head (``AuxLogits``) runs only in training; it needs 299x299 inputs. Published
weights are loaded as torchvision loads them: ``transform_input=True`` and no auxiliary head
unless ``aux_logits=True`` is asked (torchvision's int8 file has none).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models import inception as tv
from torchvision.models.quantization import inception as tvq

from ..quantization import FloatFunctional, QuantizableModel, fusion_step
from ._blocks import BroadcastInputTransform, QuantizableBasicConv2d, own_block
from ._factory import register_model

__all__ = ["QuantizableBasicConv2d", "QuantizableInception3", "QuantizableInceptionA", "QuantizableInceptionAux",
           "QuantizableInceptionB", "QuantizableInceptionC", "QuantizableInceptionD", "QuantizableInceptionE",
           "inception_v3"]


class _JoinedByCat:
    """Mixin for InceptionA-D: quantizable convs, and the branches joined by ``FloatFunctional.cat``
    (``myop``, torchvision's name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, conv_block=QuantizableBasicConv2d, **kwargs)
        self.myop = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        return self.myop.cat(self._forward(x), 1)


class QuantizableInceptionA(_JoinedByCat, tv.InceptionA):
    """35x35 block: 1x1, 5x5, double 3x3 and pool branches."""


class QuantizableInceptionB(_JoinedByCat, tv.InceptionB):
    """Grid reduction 35 -> 17."""


class QuantizableInceptionC(_JoinedByCat, tv.InceptionC):
    """17x17 block with factorised 7x7 convolutions."""


class QuantizableInceptionD(_JoinedByCat, tv.InceptionD):
    """Grid reduction 17 -> 8."""


class QuantizableInceptionE(tv.InceptionE):
    """8x8 block with split 1x3/3x1 branches: three concatenations, each its own ``FloatFunctional``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, conv_block=QuantizableBasicConv2d, **kwargs)
        self.myop1 = FloatFunctional()
        self.myop2 = FloatFunctional()
        self.myop3 = FloatFunctional()

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = self.myop1.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = self.myop2.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return [self.branch1x1(x), branch3x3, branch3x3dbl, branch_pool]

    def forward(self, x: Tensor) -> Tensor:
        return self.myop3.cat(self._forward(x), 1)


class QuantizableInceptionAux(tv.InceptionAux):
    """The auxiliary head, with quantizable convs (it has no join to change)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, conv_block=QuantizableBasicConv2d, **kwargs)


class QuantizableInception3(QuantizableModel, BroadcastInputTransform, tv.Inception3):
    """Inception v3 with quantizable blocks, quant/dequant stubs and ``fuse_model``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        own_block(kwargs, "inception_blocks", [
            QuantizableBasicConv2d, QuantizableInceptionA, QuantizableInceptionB, QuantizableInceptionC,
            QuantizableInceptionD, QuantizableInceptionE, QuantizableInceptionAux], "QuantizableInception3")
        kwargs.setdefault("init_weights", True)  # torchvision's current default, without its FutureWarning
        super().__init__(*args, **kwargs)
        self._register_input_transform()

    def forward(self, x: Tensor) -> tv.InceptionOutputs:
        x, aux = self._forward(self.quant(self._transform_input(x)))
        x = self.dequant(x)
        if torch.jit.is_scripting():  # TorchScript needs one return type: torchvision's named tuple
            if not (self.training and self.aux_logits):
                warnings.warn("a scripted Inception3 returns InceptionOutputs; read .logits")
            return tv.InceptionOutputs(x, aux)
        return self.eager_outputs(x, aux)

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse every conv-bn-relu; ``is_qat=None`` follows ``self.training``."""
        for module in self.modules():
            if isinstance(module, QuantizableBasicConv2d):
                module.fuse_model(is_qat)


@register_model(float_weights=tv.Inception_V3_Weights, int8_weights=tvq.Inception_V3_QuantizedWeights,
                published_with={"transform_input": True, "aux_logits": False, "init_weights": False},
                arguments="num_classes, aux_logits, transform_input, init_weights, dropout")
def inception_v3(**kwargs: Any) -> QuantizableInception3:
    """Inception v3 (Szegedy et al., 2015) for 299x299 images: factorised convolutions, grid reductions."""
    return QuantizableInception3(**kwargs)
