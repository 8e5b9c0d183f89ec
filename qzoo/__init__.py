"""qzoo: a model zoo of quantizable PyTorch CNNs for eager-mode PTQ and QAT."""

from .requirements import check_torch_version

check_torch_version()

from . import bias_correction, datasets, equalization, sensitivity, workflow  # noqa: E402, F401 (public modules)
from ._files import IntegrityError
from ._record import ModelRecord
from ._version import __version__
from .data import synthetic_images
from .flows import convert, prepare_qat
from .hub import from_pretrained, push_to_hub, save_pretrained
from .inference import OptimizedModel, optimize_for_inference
from .models import FAMILY_EXPORTS, register_model
from .onnx_export import OnnxRuntimeModel, export_onnx, onnx_from_pretrained
from .pretrained import get_weights, list_models, list_weights
from .ptq import quantize
from .quantization import (
    ACTIVATION_OBSERVERS,
    BACKENDS,
    DEFAULT_BACKEND,
    backend_engine,
    calibrate,
    float_logits,
    fused_mode,
    get_qconfig,
    int8_skeleton,
    is_int8,
    model_backend,
    model_record,
    prepare_ptq,
    quantized_engine,
)
from .registry import get_model
from .train import refresh_batchnorm

globals().update(FAMILY_EXPORTS)  # every family's Quantizable* classes and registered factories

__all__ = [
    "ACTIVATION_OBSERVERS",
    "BACKENDS",
    "DEFAULT_BACKEND",
    "IntegrityError",
    "ModelRecord",
    "OnnxRuntimeModel",
    "OptimizedModel",
    "__version__",
    "backend_engine",
    "calibrate",
    "convert",
    "export_onnx",
    "float_logits",
    "onnx_from_pretrained",
    "from_pretrained",
    "fused_mode",
    "get_model",
    "get_qconfig",
    "get_weights",
    "int8_skeleton",
    "is_int8",
    "list_models",
    "list_weights",
    "model_backend",
    "model_record",
    "optimize_for_inference",
    "prepare_ptq",
    "prepare_qat",
    "push_to_hub",
    "quantize",
    "quantized_engine",
    "refresh_batchnorm",
    "register_model",
    "save_pretrained",
    "synthetic_images",
    *sorted(FAMILY_EXPORTS),
]
