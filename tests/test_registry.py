"""The registry: one decorator on a builder is all a new family needs, and every factory documents its arguments."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import pydoc
from functools import partial

import pytest
import torch
from helpers import refreshed, run
from loopback import serving
from torch import Tensor, nn
from torchvision.models import Weights as TorchvisionWeights
from torchvision.models import WeightsEnum
from torchvision.transforms._presets import ImageClassification

import qzoo
import qzoo.cli
from qzoo.quantization import QuantizableModel, fuse_modules, fusion_step

FACTORY_ARGUMENTS = ("weights", "prepare", "quantize", "backend", "progress")


class ToyNet(QuantizableModel):
    """The smallest quantizable family: conv-bn-relu, pooling, a linear head."""

    def __init__(self, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()  # QuantizableModel adds the quant/dequant stubs
        self.conv, self.bn, self.relu = nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu(self.bn(self.conv(self.quant(x)))))
        return self.dequant(self.fc(torch.flatten(x, 1)))

    @fusion_step
    def fuse_model(self, is_qat: bool) -> None:
        fuse_modules(self, [["conv", "bn", "relu"]], is_qat)


def help_text(thing) -> str:
    return pydoc.render_doc(thing, renderer=pydoc.plaintext)


def cli_json(capsys, *argv: str):
    assert qzoo.cli.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_family_registered_by_one_decorator_is_everywhere(isolated_registry, torch_home, tmp_path, capsys):
    torch.manual_seed(0)
    trained = refreshed(ToyNet())
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    payload = buffer.getvalue()
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    with serving() as server:
        filename = f"toy-{prefix}.pth"  # torchvision's naming: the sha256 prefix in the file name
        server.files[filename] = payload

        class ToyWeights(WeightsEnum):
            V1 = TorchvisionWeights(url=f"{server.url}/{filename}",
                                    transforms=partial(ImageClassification, crop_size=32, resize_size=36),
                                    meta={"categories": ["a", "b", "c"], "num_params": 263})
            DEFAULT = V1

        @qzoo.register_model(float_weights=ToyWeights, arguments="num_classes, width")
        def toy_net(**kwargs) -> ToyNet:
            """A toy family, registered by a test."""
            return ToyNet(**kwargs)

        assert "toy_net" in qzoo.list_models() and "toy_net" in cli_json(capsys, "list")
        assert qzoo.list_weights("toy_net") == ["toy_net.v1"] and "toy_net.v1" in cli_json(capsys, "list", "--pretrained")
        entry = qzoo.get_weights("toy_net.v1")
        assert (entry.sha256, entry.kwargs, entry.default, entry.transforms.crop_size) == (prefix, {"num_classes": 3},
                                                                                            True, 32)
        assert cli_json(capsys, "info", "toy_net")["weights"] == ["toy_net.v1"]

        loaded = qzoo.get_model("toy_net", weights="DEFAULT", progress=False)  # the verified URL path
        assert server.requests == [f"GET /{filename}"]
    assert isinstance(loaded, ToyNet) and qzoo.model_record(loaded).weights == "toy_net.v1"
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.state_dict().items())
    assert qzoo.get_model("toy_net", prepare="ptq").conv.__class__.__name__ == "ConvReLU2d"
    assert qzoo.get_model("toy_net", prepare="qat", width=4).training

    x = qzoo.synthetic_images(4, 32, seed=2)
    int8 = qzoo.quantize(loaded, x.split(2), progress=False)
    again = qzoo.from_pretrained(qzoo.save_pretrained(int8, tmp_path / "toy-int8"))  # rebuilt by name
    assert torch.equal(run(again, x), run(int8, x))
    text = help_text(toy_net)
    assert "A toy family" in text and all(f"{argument}:" in text for argument in FACTORY_ARGUMENTS)
    assert "ToyWeights" in text and "num_classes, width" in text and "centre crop of 32" in text


def test_a_name_taken_by_another_family_is_refused(isolated_registry):
    with pytest.raises(ValueError, match="'resnet18' is already registered by qzoo.models.resnet"):
        @qzoo.register_model(float_weights=None)
        def resnet18(**kwargs) -> ToyNet:
            return ToyNet(**kwargs)


@pytest.mark.parametrize("name", qzoo.list_models())
def test_every_factory_is_exported_and_documents_every_argument(name):
    factory = qzoo.registry.get_factory(name)
    assert name in qzoo.__all__ and getattr(qzoo, name) is factory
    parameters = inspect.signature(factory).parameters
    assert [p for p in parameters if parameters[p].kind is inspect.Parameter.KEYWORD_ONLY] == list(FACTORY_ARGUMENTS)
    text = help_text(factory)
    for argument in (*FACTORY_ARGUMENTS, "**kwargs"):
        assert f"    {argument}:" in text, f"help({name}) does not document {argument}"
    mean = qzoo.registry.model_spec(name).normalization[0]
    assert "Input: float32 RGB images" in text and f"mean {mean}" in text
    assert name.startswith("efficientnet_lite") == (mean == (0.498, 0.498, 0.498))


def test_help_of_mobilenet_v2_shows_every_factory_argument():
    text = help_text(qzoo.mobilenet_v2)
    assert "mobilenet_v2(*, weights=AUTO, prepare=None, quantize=False, backend=None, progress=True, **kwargs" in text
    assert "MobileNet_V2_Weights" in text and "MobileNet_V2_QuantizedWeights" in text and "stem_stride" in text
    assert "resize to 232 pixels and a centre crop of 224" in text  # IMAGENET1K_V2, torchvision's DEFAULT


def test_names_that_moved_keep_working():
    from qzoo import registry, serialization, weights

    assert weights.get_weights is qzoo.get_weights and weights.list_weights is qzoo.list_weights
    assert serialization.IntegrityError is qzoo.IntegrityError is weights.IntegrityError
    assert registry.get_model is qzoo.get_model
    assert qzoo.__version__ == qzoo._version.__version__
