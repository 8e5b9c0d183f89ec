"""Quantizable model families, one module each, in torchvision's layout."""

from .mobilenetv2 import QuantizableInvertedResidual, QuantizableMobileNetV2, mobilenet_v2
from .resnet import (
    QuantizableBasicBlock,
    QuantizableBottleneck,
    QuantizableResNet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    wide_resnet50_2,
    wide_resnet101_2,
)

__all__ = [
    "QuantizableBasicBlock",
    "QuantizableBottleneck",
    "QuantizableResNet",
    "QuantizableInvertedResidual",
    "QuantizableMobileNetV2",
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
    "mobilenet_v2",
]
