"""Quantizable ResNet, ResNeXt and Wide ResNet.

Each class changes as little as possible from torchvision's float parent: the residual add
and the ReLU after it become one ``FloatFunctional.add_relu`` (quantized adds need their own
output scale), every ReLU is its own non-in-place module (so fusion can absorb it), and the
model gains ``QuantStub``/``DeQuantStub`` and ``fuse_model``. Module names equal torchvision's
(float and ``torchvision.models.quantization``), so both kinds of checkpoint load strictly.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchvision.models import resnet as tv
from torchvision.models.quantization import resnet as tvq

from ..quantization import FloatFunctional, QuantizableModel, fuse_modules, fusion_step
from ._factory import fixed_kwargs, register_model

__all__ = [
    "QuantizableBasicBlock",
    "QuantizableBottleneck",
    "QuantizableResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
]


RESNET_ARGUMENTS = "num_classes, zero_init_residual, groups, width_per_group, replace_stride_with_dilation, norm_layer"


def _fuse_downsample(block: tv.BasicBlock | tv.Bottleneck, is_qat: bool) -> None:
    if block.downsample is not None:
        fuse_modules(block.downsample, [["0", "1"]], is_qat)


class QuantizableBasicBlock(tv.BasicBlock):
    """BasicBlock whose second ReLU is fused into the residual add (``add_relu``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.relu = nn.ReLU()
        self.add_relu = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.add_relu.add_relu(out, identity)

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse conv1-bn1-relu, conv2-bn2 and the downsample conv-bn."""
        fuse_modules(self, [["conv1", "bn1", "relu"], ["conv2", "bn2"]], is_qat)
        _fuse_downsample(self, is_qat)


class QuantizableBottleneck(tv.Bottleneck):
    """Bottleneck with one ReLU module per use and the last ReLU fused into the add."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the float parent reuses self.relu three times; fusion needs one ReLU per conv. self.relu
        # stays, unused and not in-place as torchvision's, so module names (and order) equal its own
        self.relu = nn.ReLU()
        self.skip_add_relu = FloatFunctional()
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.skip_add_relu.add_relu(out, identity)

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse conv1-bn1-relu1, conv2-bn2-relu2, conv3-bn3 and the downsample conv-bn."""
        fuse_modules(self, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["conv3", "bn3"]], is_qat)
        _fuse_downsample(self, is_qat)


class QuantizableResNet(QuantizableModel, tv.ResNet):
    """ResNet with quant/dequant stubs at the ends and ``fuse_model`` down the whole tree."""

    def __init__(self, block: type[QuantizableBasicBlock | QuantizableBottleneck], layers: list[int], **kwargs: Any):
        super().__init__(block, layers, **kwargs)
        self.relu = nn.ReLU()

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        """Fuse the stem conv1-bn1-relu and every block; ``is_qat=None`` follows ``self.training``."""
        fuse_modules(self, [["conv1", "bn1", "relu"]], is_qat)
        for module in self.modules():
            if isinstance(module, (QuantizableBasicBlock, QuantizableBottleneck)):
                module.fuse_model(is_qat)


@register_model(float_weights=tv.ResNet18_Weights, int8_weights=tvq.ResNet18_QuantizedWeights,
                arguments=RESNET_ARGUMENTS)
def resnet18(**kwargs: Any) -> QuantizableResNet:
    """ResNet-18 (He et al., 2015)."""
    return QuantizableResNet(QuantizableBasicBlock, [2, 2, 2, 2], **kwargs)


@register_model(float_weights=tv.ResNet34_Weights, arguments=RESNET_ARGUMENTS)
def resnet34(**kwargs: Any) -> QuantizableResNet:
    """ResNet-34 (He et al., 2015)."""
    return QuantizableResNet(QuantizableBasicBlock, [3, 4, 6, 3], **kwargs)


@register_model(float_weights=tv.ResNet50_Weights, int8_weights=tvq.ResNet50_QuantizedWeights,
                arguments=RESNET_ARGUMENTS)
def resnet50(**kwargs: Any) -> QuantizableResNet:
    """ResNet-50 (He et al., 2015)."""
    return QuantizableResNet(QuantizableBottleneck, [3, 4, 6, 3], **kwargs)


@register_model(float_weights=tv.ResNet101_Weights, arguments=RESNET_ARGUMENTS)
def resnet101(**kwargs: Any) -> QuantizableResNet:
    """ResNet-101 (He et al., 2015)."""
    return QuantizableResNet(QuantizableBottleneck, [3, 4, 23, 3], **kwargs)


@register_model(float_weights=tv.ResNet152_Weights, arguments=RESNET_ARGUMENTS)
def resnet152(**kwargs: Any) -> QuantizableResNet:
    """ResNet-152 (He et al., 2015)."""
    return QuantizableResNet(QuantizableBottleneck, [3, 8, 36, 3], **kwargs)


@register_model(float_weights=tv.ResNeXt50_32X4D_Weights, arguments=RESNET_ARGUMENTS)
def resnext50_32x4d(**kwargs: Any) -> QuantizableResNet:
    """ResNeXt-50 32x4d (Xie et al., 2016): ``groups=32``, ``width_per_group=4`` are fixed."""
    return QuantizableResNet(QuantizableBottleneck, [3, 4, 6, 3], **fixed_kwargs(kwargs, groups=32, width_per_group=4))


@register_model(float_weights=tv.ResNeXt101_32X8D_Weights, int8_weights=tvq.ResNeXt101_32X8D_QuantizedWeights,
                arguments=RESNET_ARGUMENTS)
def resnext101_32x8d(**kwargs: Any) -> QuantizableResNet:
    """ResNeXt-101 32x8d (Xie et al., 2016): ``groups=32``, ``width_per_group=8`` are fixed."""
    return QuantizableResNet(QuantizableBottleneck, [3, 4, 23, 3], **fixed_kwargs(kwargs, groups=32, width_per_group=8))


@register_model(float_weights=tv.ResNeXt101_64X4D_Weights, int8_weights=tvq.ResNeXt101_64X4D_QuantizedWeights,
                arguments=RESNET_ARGUMENTS)
def resnext101_64x4d(**kwargs: Any) -> QuantizableResNet:
    """ResNeXt-101 64x4d (Xie et al., 2016): ``groups=64``, ``width_per_group=4`` are fixed."""
    return QuantizableResNet(QuantizableBottleneck, [3, 4, 23, 3], **fixed_kwargs(kwargs, groups=64, width_per_group=4))


@register_model(float_weights=tv.Wide_ResNet50_2_Weights, arguments=RESNET_ARGUMENTS)
def wide_resnet50_2(**kwargs: Any) -> QuantizableResNet:
    """Wide ResNet-50-2 (Zagoruyko & Komodakis, 2016): ``width_per_group=128`` is fixed."""
    return QuantizableResNet(QuantizableBottleneck, [3, 4, 6, 3], **fixed_kwargs(kwargs, width_per_group=128))


@register_model(float_weights=tv.Wide_ResNet101_2_Weights, arguments=RESNET_ARGUMENTS)
def wide_resnet101_2(**kwargs: Any) -> QuantizableResNet:
    """Wide ResNet-101-2 (Zagoruyko & Komodakis, 2016): ``width_per_group=128`` is fixed."""
    return QuantizableResNet(QuantizableBottleneck, [3, 4, 23, 3], **fixed_kwargs(kwargs, width_per_group=128))
