"""Quantizable building blocks shared by several families (squeeze-excitation, ReLU replacement, fusion)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.googlenet import BasicConv2d
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation

from ..quantization import FloatFunctional, fuse_modules


def own_block(kwargs: dict[str, Any], argument: str, block: Any, model: str) -> None:
    """Set ``kwargs[argument]`` to the family's quantizable block (or list of blocks); refuse another
    (it would not quantize)."""
    if kwargs.setdefault(argument, block) is not block:
        raise ValueError(f"{model} builds its own quantizable blocks; drop {argument}=")


class BroadcastInputTransform:
    """torchvision's ``transform_input`` for GoogLeNet and Inception v3 (the ported weights expect inputs
    re-normalised from ImageNet's mean and std to (x - 0.5) / 0.5), as one multiply and one add broadcast
    over the channels instead of picking, scaling and concatenating each channel: the same float32 values
    bit for bit, two passes over the batch instead of five and two ONNX ops instead of fourteen.

    Call :meth:`_register_input_transform` after ``nn.Module.__init__``; the buffers are not persistent,
    so state_dicts stay torchvision's."""

    def _register_input_transform(self) -> None:
        scale = [0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5]  # torchvision's constants, float32 as torch casts them
        shift = [(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5]
        self.register_buffer("input_scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)

    def _transform_input(self, x: Tensor) -> Tensor:
        if self.transform_input:
            x = x * self.input_scale + self.input_shift
        return x


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


class QuantizableBasicConv2d(BasicConv2d):
    """Conv, BatchNorm and a ReLU module: GoogLeNet's and Inception v3's ``BasicConv2d`` (the same block in
    both), whose float forward calls ``F.relu`` in place."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))

    def fuse_model(self, is_qat: bool) -> None:
        """Fuse conv-bn-relu."""
        fuse_modules(self, [["conv", "bn", "relu"]], is_qat)


def quantizable_squeeze_excitation(se: SqueezeExcitation) -> QuantizableSqueezeExcitation:
    """torchvision's squeeze-excitation, built inside a block that takes no SE argument (RegNet's
    bottleneck), as a quantizable one holding the same modules (so the same initialisation)."""
    with torch.device("meta"):  # placeholder layers, replaced below: no random numbers drawn
        quantizable = QuantizableSqueezeExcitation(se.fc1.in_channels, se.fc1.out_channels,
                                                   scale_activation=type(se.scale_activation))
    quantizable.fc1, quantizable.fc2, quantizable.activation = se.fc1, se.fc2, se.activation
    return quantizable


class QuantizableSiLU(nn.Module):
    """SiLU as ``x * sigmoid(x)``: torch has no int8 SiLU kernel (pytorch/pytorch#73507), but has
    both of these. The sigmoid's output has the fixed range [0, 1]; the product gets its own
    observed scale. In float it equals ``nn.SiLU`` to rounding."""

    def __init__(self) -> None:
        super().__init__()
        self.sigmoid = nn.Sigmoid()
        self.mul = FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        return self.mul.mul(x, self.sigmoid(x))


def quantizable_silus(module: nn.Module) -> None:
    """Replace every ``nn.SiLU`` inside ``module`` with a new :class:`QuantizableSiLU`."""
    for name, child in module.named_children():
        if type(child) is nn.SiLU:
            setattr(module, name, QuantizableSiLU())
        else:
            quantizable_silus(child)
