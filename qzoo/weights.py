"""The former name of :mod:`qzoo.pretrained` (the catalogue) and of :mod:`qzoo._files` (verified files).

Kept so code written against ``qzoo.weights`` keeps working; new code uses ``qzoo.pretrained``
(or the top-level ``qzoo.get_weights`` / ``qzoo.list_weights``).
"""

from ._files import IntegrityError, file_sha256, verify_file
from .pretrained import (
    CIFAR10_CLASSES,
    CIFAR10_TRANSFORMS,
    IMAGENET_TRANSFORMS,
    Transforms,
    Weights,
    catalogue,
    get_weights,
    list_weights,
)

__all__ = ["CIFAR10_CLASSES", "CIFAR10_TRANSFORMS", "IMAGENET_TRANSFORMS", "IntegrityError", "Transforms", "Weights",
           "catalogue", "file_sha256", "get_weights", "list_weights", "verify_file"]
