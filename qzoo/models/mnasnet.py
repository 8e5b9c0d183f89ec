"""Quantizable MNASNet-B1 (Tan et al., 2018), depth multipliers 0.5, 0.75, 1.0 and 1.3.

torchvision has no quantizable MNASNet; this one changes its float MNASNet only where int8
needs it (float outputs are equal, tested):

- each inverted residual's skip adds through ``FloatFunctional.add`` (a quantized sum needs its
  own output scale): torchvision builds the blocks inside ``MNASNet.__init__`` with no block
  argument, so each is rewrapped, keeping its very layers (and so torchvision's initialisation);
- ReLUs become separate non-in-place modules, fused with their conv and BatchNorm; the linear
  projection fuses conv-bn;
- ``QuantStub``/``DeQuantStub`` at the ends; the global average (``x.mean([2, 3])``) runs on the
  int8 tensor, copied to the standard layout first (torch's int8 mean fails on a 1x1 map in the
  conv's channels-last layout: 32x32 inputs).

Module names equal torchvision's, so its float checkpoints (version 1 and 2 layouts, as
torchvision reads them) load strictly. MNASNet keeps ReLU (no ReLU6), so nothing is swapped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import mnasnet as tv

from ..quantization import FloatFunctional, QuantizableModel, fuse_modules, fusion_step
from ._blocks import plain_relus
from ._factory import register_model

__all__ = ["QuantizableMNASNet", "QuantizableMNASNetInvertedResidual", "mnasnet0_5", "mnasnet0_75",
           "mnasnet1_0", "mnasnet1_3"]


class QuantizableMNASNetInvertedResidual(nn.Module):
    """torchvision's MNASNet inverted residual (its ``layers`` kept as they are), skip through ``FloatFunctional.add``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.apply_residual: bool = block.apply_residual
        self.layers = block.layers
        self.skip_add = FloatFunctional()

    def forward(self, input: Tensor) -> Tensor:
        if self.apply_residual:
            return self.skip_add.add(self.layers(input), input)
        return self.layers(input)

    def fuse_model(self, is_qat: bool) -> None:
        """Pointwise conv-bn-relu, depthwise conv-bn-relu, projecting conv-bn."""
        fuse_modules(self.layers, [["0", "1", "2"], ["3", "4", "5"], ["6", "7"]], is_qat)


class QuantizableMNASNet(QuantizableModel, tv.MNASNet):
    """MNASNet with quantizable skips, quant/dequant stubs and ``fuse_model``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._quantizable_blocks()
        plain_relus(self)

    def _quantizable_blocks(self) -> None:
        for stack in self.layers:
            if isinstance(stack, nn.Sequential):
                for index, block in enumerate(stack):
                    if isinstance(block, tv._InvertedResidual):
                        stack[index] = QuantizableMNASNetInvertedResidual(block)

    def _forward_impl(self, x: Tensor) -> Tensor:
        # torch's int8 mean over a 1x1 map in the conv's channels-last strides fails for batches > 1
        # (32x32 inputs); in the standard layout it runs. The copy is of the last feature map only.
        return self.classifier(self.layers(x).clone(memory_format=torch.contiguous_format).mean([2, 3]))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              *args: Any, **kwargs: Any) -> None:
        # torchvision reads the layout version from the file's metadata and refuses a state without it;
        # qzoo's safetensors files (and any plain dict) carry none: they hold the current layout
        if local_metadata.get("version") is None:
            local_metadata = {**local_metadata, "version": self._version}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)
        if self._version == 1:  # torchvision patched a version-1 stem in: make its blocks quantizable too
            self._quantizable_blocks()
            plain_relus(self)

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse the stem, every block and the last conv-bn-relu; ``is_qat=None`` follows ``self.training``."""
        fuse_modules(self.layers, [["0", "1", "2"], ["3", "4", "5"], ["6", "7"], ["14", "15", "16"]], is_qat)
        for module in self.modules():
            if isinstance(module, QuantizableMNASNetInvertedResidual):
                module.fuse_model(is_qat)


ARGUMENTS = "num_classes, dropout"


@register_model(float_weights=tv.MNASNet0_5_Weights, arguments=ARGUMENTS)
def mnasnet0_5(**kwargs: Any) -> QuantizableMNASNet:
    """MNASNet-B1 with depth multiplier 0.5 (Tan et al., 2018)."""
    return QuantizableMNASNet(0.5, **kwargs)


@register_model(float_weights=tv.MNASNet0_75_Weights, arguments=ARGUMENTS)
def mnasnet0_75(**kwargs: Any) -> QuantizableMNASNet:
    """MNASNet-B1 with depth multiplier 0.75 (Tan et al., 2018)."""
    return QuantizableMNASNet(0.75, **kwargs)


@register_model(float_weights=tv.MNASNet1_0_Weights, arguments=ARGUMENTS)
def mnasnet1_0(**kwargs: Any) -> QuantizableMNASNet:
    """MNASNet-B1 with depth multiplier 1.0 (Tan et al., 2018)."""
    return QuantizableMNASNet(1.0, **kwargs)


@register_model(float_weights=tv.MNASNet1_3_Weights, arguments=ARGUMENTS)
def mnasnet1_3(**kwargs: Any) -> QuantizableMNASNet:
    """MNASNet-B1 with depth multiplier 1.3 (Tan et al., 2018)."""
    return QuantizableMNASNet(1.3, **kwargs)
