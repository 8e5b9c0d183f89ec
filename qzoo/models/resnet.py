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


RESNET_ARGUMENTS = ("num_classes, zero_init_residual, groups, width_per_group, replace_stride_with_dilation, "
                    "norm_layer, stem")
STEMS = ("imagenet", "cifar")


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
    """ResNet with quant/dequant stubs at the ends and ``fuse_model`` down the whole tree.

    ``stem="cifar"`` is the usual variant for 32x32 inputs: a 3x3 stride-1 first conv and no max
    pool, so the first stage sees the full image instead of an 8x8 map (16x the compute, 3x3x3
    instead of 7x7x3 stem weights: torchvision's ImageNet files do not fit it).
    """

    def __init__(self, block: type[QuantizableBasicBlock | QuantizableBottleneck], layers: list[int], *,
                 stem: str = "imagenet", **kwargs: Any):
        if stem not in STEMS:
            raise ValueError(f"stem={stem!r}: use 'imagenet' (torchvision's 7x7 stride-2 conv and max pool) or "
                             "'cifar' (a 3x3 stride-1 conv, no max pool, for 32x32 inputs)")
        super().__init__(block, layers, **kwargs)
        self.relu = nn.ReLU()
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, self.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()

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
