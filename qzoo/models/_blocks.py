"""Quantizable building blocks shared by several families (squeeze-excitation, ReLU replacement, fusion)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation

from ..quantization import FloatFunctional, fuse_modules


def own_block(kwargs: dict[str, Any], argument: str, block: type[nn.Module], model: str) -> None:
    """Set ``kwargs[argument]`` to the family's quantizable block; refuse another (it would not quantize)."""
    if kwargs.setdefault(argument, block) is not block:
        raise ValueError(f"{model} builds its own {block.__name__} blocks; drop {argument}=")


def plain_relus(module: nn.Module, *, relu6: bool = False) -> None:
    """Make every ``nn.ReLU`` (and ``nn.ReLU6`` when ``relu6``) a new non-in-place ``nn.ReLU``.

    In-place activations cannot be observed separately from their input, and one ReLU module
    reused at several places would share a single output scale.
    """
    for name, child in module.named_children():
        if type(child) is nn.ReLU or (relu6 and type(child) is nn.ReLU6):
            setattr(module, name, nn.ReLU())
        else:
            plain_relus(child, relu6=relu6)


def fuse_conv_norm_activation(block: Conv2dNormActivation, is_qat: bool) -> None:
    """Fuse a torchvision ``Conv2dNormActivation``: conv-bn-relu, or conv-bn when its activation is not a ReLU
    (Hardswish, SiLU: quantized kernels of their own)."""
    names = ["0", "1"] + (["2"] if len(block) > 2 and type(block[2]) is nn.ReLU else [])
    fuse_modules(block, [names], is_qat)


class QuantizableSqueezeExcitation(SqueezeExcitation):
    """Squeeze-excitation whose gating product is a ``FloatFunctional.mul`` (its own int8 output scale).

    The squeeze (average pool, 1x1 conv, ReLU, 1x1 conv) and the gate activation run as quantized
    ops; ``fc1`` fuses with a ReLU activation. Version 2 of this module's state: a QAT state of
    version 1 (torchvision's MobileNetV3 int8 file predates it) lacks the gate's fixed-range
    fake-quant, whose placeholder values are filled in on load, as torchvision does.
    """

    _version = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip_mul = FloatFunctional()

    def forward(self, input: Tensor) -> Tensor:
        return self.skip_mul.mul(self._scale(input), input)

    def fuse_model(self, is_qat: bool) -> None:
        """Fuse ``fc1`` with a ReLU activation (other activations stay separate quantized ops)."""
        if type(self.activation) is nn.ReLU:
            fuse_modules(self, [["fc1", "activation"]], is_qat)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              *args: Any, **kwargs: Any) -> None:
        version = local_metadata.get("version")
        if hasattr(self, "qconfig") and (version is None or version < 2):
            placeholders = {"scale": torch.tensor([1.0]), "zero_point": torch.tensor([0], dtype=torch.int32)}
            gate = prefix + "scale_activation.activation_post_process."
            for key, value in {**{gate + k: v for k, v in placeholders.items()},
                               **{gate + "activation_post_process." + k: v for k, v in placeholders.items()},
                               gate + "fake_quant_enabled": torch.tensor([1]),
                               gate + "observer_enabled": torch.tensor([1])}.items():
                state_dict.setdefault(key, value)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)
