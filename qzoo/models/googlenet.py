"""Quantizable GoogLeNet (Inception v1; Szegedy et al., 2014).

Differences from torchvision's float GoogLeNet (the same as torchvision's ``QuantizableGoogLeNet``,
so int8 outputs match it bit for bit):

- every ``BasicConv2d`` gets a ReLU module of its own (the float one calls ``F.relu`` in place),
  fused with its conv and BatchNorm; the auxiliary heads' ``F.relu`` becomes a module too;
- the four branches of each Inception block join through ``FloatFunctional.cat``, which
  requantizes them to one output scale;
- ``QuantStub``/``DeQuantStub`` around ``_forward``; ``transform_input`` (the re-normalisation
  the ported weights expect) runs in float before the stub, as one broadcast multiply-add (the
  same values bit for bit, fewer passes).

The auxiliary heads run only in training (QAT), on fake-quantized tensors; an int8 model keeps
them as torchvision does but never calls them. Published weights are loaded as torchvision loads
them: ``transform_input=True`` and no auxiliary heads unless ``aux_logits=True`` is asked
(otherwise the files' auxiliary tensors are skipped; asked for, they load, though torchvision
notes they were never trained).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.googlenet import GoogLeNet, GoogLeNet_Weights, GoogLeNetOutputs, Inception, InceptionAux
from torchvision.models.quantization.googlenet import GoogLeNet_QuantizedWeights

from ..quantization import FloatFunctional, QuantizableModel, fusion_step
from ._blocks import BroadcastInputTransform, QuantizableBasicConv2d, own_block
from ._factory import register_model

__all__ = ["QuantizableBasicConv2d", "QuantizableGoogLeNet", "QuantizableGoogLeNetInception",
           "QuantizableGoogLeNetInceptionAux", "googlenet"]


class QuantizableGoogLeNetInception(Inception):
    """Inception block whose four branches join through ``FloatFunctional.cat``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, conv_block=QuantizableBasicConv2d, **kwargs)
        self.cat = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        return self.cat.cat(self._forward(x), 1)


class QuantizableGoogLeNetInceptionAux(InceptionAux):
    """Auxiliary head with a ReLU module after ``fc1`` (kept unfused, as torchvision keeps it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, conv_block=QuantizableBasicConv2d, **kwargs)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
        x = self.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(self.dropout(x))


class QuantizableGoogLeNet(QuantizableModel, BroadcastInputTransform, GoogLeNet):
    """GoogLeNet with quantizable blocks, quant/dequant stubs and ``fuse_model``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        own_block(kwargs, "blocks", [QuantizableBasicConv2d, QuantizableGoogLeNetInception,
                                     QuantizableGoogLeNetInceptionAux], "QuantizableGoogLeNet")
        kwargs.setdefault("init_weights", True)  # torchvision's current default, without its FutureWarning
        super().__init__(*args, **kwargs)
        self._register_input_transform()

    def forward(self, x: Tensor) -> GoogLeNetOutputs:
        x, aux2, aux1 = self._forward(self.quant(self._transform_input(x)))
        x = self.dequant(x)
        if torch.jit.is_scripting():  # TorchScript needs one return type: torchvision's named tuple
            if not (self.training and self.aux_logits):
                warnings.warn("a scripted GoogLeNet returns GoogLeNetOutputs; read .logits")
            return GoogLeNetOutputs(x, aux2, aux1)
        return self.eager_outputs(x, aux2, aux1)

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse every conv-bn-relu; ``is_qat=None`` follows ``self.training``."""
        for module in self.modules():
            if isinstance(module, QuantizableBasicConv2d):
                module.fuse_model(is_qat)


@register_model(float_weights=GoogLeNet_Weights, int8_weights=GoogLeNet_QuantizedWeights,
                published_with={"transform_input": True, "aux_logits": False, "init_weights": False},
                arguments="num_classes, aux_logits, transform_input, init_weights, dropout, dropout_aux")
def googlenet(**kwargs: Any) -> QuantizableGoogLeNet:
    """GoogLeNet (Szegedy et al., 2014): Inception blocks of four parallel branches."""
    return QuantizableGoogLeNet(**kwargs)
