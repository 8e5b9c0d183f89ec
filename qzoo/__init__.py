"""qzoo: a model zoo of quantizable PyTorch CNNs for eager-mode PTQ and QAT."""

from .requirements import check_torch_version

check_torch_version()

from .data import synthetic_images
from .hub import from_pretrained, push_to_hub, save_pretrained
from .inference import OptimizedModel, optimize_for_inference
from .onnx_export import OnnxRuntimeModel, export_onnx
from .models import (
    QuantizableBasicBlock,
    QuantizableBottleneck,
    QuantizableInvertedResidual,
    QuantizableMobileNetV2,
    QuantizableResNet,
    mobilenet_v2,
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
from .quantization import (
    ACTIVATION_OBSERVERS,
    BACKENDS,
    backend_engine,
    calibrate,
    convert,
    fused_mode,
    get_qconfig,
    int8_skeleton,
    is_int8,
    model_backend,
    prepare_ptq,
    prepare_qat,
    quantized_engine,
)
from .registry import get_model, list_models
from .weights import get_weights, list_weights
from .train import refresh_batchnorm

__version__ = "0.1.0"

__all__ = [
    "ACTIVATION_OBSERVERS",
    "BACKENDS",
    "OnnxRuntimeModel",
    "OptimizedModel",
    "QuantizableBasicBlock",
    "QuantizableBottleneck",
    "QuantizableInvertedResidual",
    "QuantizableMobileNetV2",
    "QuantizableResNet",
    "backend_engine",
    "calibrate",
    "convert",
    "export_onnx",
    "from_pretrained",
    "fused_mode",
    "get_model",
    "get_qconfig",
    "get_weights",
    "int8_skeleton",
    "is_int8",
    "list_models",
    "list_weights",
    "mobilenet_v2",
    "model_backend",
    "optimize_for_inference",
    "prepare_ptq",
    "prepare_qat",
    "push_to_hub",
    "quantized_engine",
    "refresh_batchnorm",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "save_pretrained",
    "synthetic_images",
    "wide_resnet50_2",
    "wide_resnet101_2",
]
