"""Data loading (archives, decoding, samples, shards) and the resumable training loop."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import tarfile

import pytest
import torch
from helpers import NUM_CLASSES, PicklePayload, images, make_image_folder, write_png16

import qzoo
from qzoo import data, train

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images"))


def test_archive_unpacks_once_and_refuses_paths_outside_its_folder(folder, tmp_path):
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="set")
    first = data.unpack_archive(archive)
    assert (first / "set" / "train" / "cat" / "0.png").is_file()
    assert data.unpack_archive(archive) == first
    assert not list(first.parent.glob(".*"))  # no staging folder left behind
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ValueError, match="OutsideDestinationError.*escaped.txt"):
        data.unpack_archive(evil)
    assert not (tmp_path / "cache" / "escaped.txt").exists() and not list((tmp_path / "cache" / "datasets").glob(".*"))


def test_decoding_is_cached_and_batches_are_normalized_and_sharded(folder):
    images = data.ImageTensors.from_folder(folder / "train", 32, progress=False)
    assert images.images.shape == (36, 3, 32, 32) and images.classes == ("cat", "dog", "ship")
    again = data.ImageTensors.from_folder(folder / "train", 32, progress=False)
    assert torch.equal(again.images, images.images)
    batch, labels = next(iter(images.batches(36, mean=(0.5,) * 3, std=(0.5,) * 3)))
    assert torch.allclose(batch, images.images.float() / 127.5 - 1, atol=1e-6) and torch.equal(labels, images.labels)
    shards = [torch.cat([l for _, l in images.batches(4, shuffle=True, seed=3, rank=r, world_size=2)]) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 18
    assert len(images.batches(5)) == 8


def test_hidden_files_and_folders_are_not_images(folder, tmp_path):
    """An archive made on a Mac carries a ``._name.jpg`` AppleDouble file beside each image; Jupyter leaves
    ``.ipynb_checkpoints``. Neither is a photograph, as hidden class folders are not classes."""
    import shutil

    copy = tmp_path / "train"
    shutil.copytree(folder / "train", copy)
    (copy / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (copy / "dog" / ".ipynb_checkpoints").mkdir()
    shutil.copy(copy / "dog" / "0.png", copy / "dog" / ".ipynb_checkpoints" / "0-checkpoint.png")
    (copy / ".hidden-class").mkdir()
    shutil.copy(copy / "dog" / "0.png", copy / ".hidden-class" / "0.png")
    (copy / "ship" / "more").mkdir()
    shutil.copy(copy / "ship" / "0.png", copy / "ship" / "more" / "extra.png")  # a plain sub-folder still counts
    loaded = data.ImageTensors.from_folder(copy, 32, progress=False, cache=False)
    original = data.ImageTensors.from_folder(folder / "train", 32, progress=False, cache=False)
    assert loaded.classes == original.classes == ("cat", "dog", "ship")
    assert len(loaded.labels) == len(original.labels) + 1 and int((loaded.labels == 2).sum()) == 13


def test_balanced_sample_is_seeded_and_even(folder):
    images = data.ImageTensors.from_folder(folder / "train", 32, progress=False)
    sample = images.balanced_sample(7, seed=1)
    assert sorted(torch.bincount(sample.labels).tolist()) == [2, 2, 3]
    assert torch.equal(images.balanced_sample(7, seed=1).images, sample.images)
    assert not torch.equal(images.balanced_sample(7, seed=2).images, sample.images)


def test_recipe_schedule_and_json():
    recipe = train.Recipe(epochs=4, lr=0.1, warmup_epochs=1)
    assert recipe.lr_at(0, 10) == pytest.approx(0.01) and recipe.lr_at(9, 10) == pytest.approx(0.1)
    assert recipe.lr_at(10, 10) == pytest.approx(0.1) and recipe.lr_at(39, 10) < 0.001
    assert train.Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    with pytest.raises(ValueError, match="warmup_epochs"):
        train.Recipe(epochs=1, lr=0.1, warmup_epochs=1)
    for bad, message in (({"lr": float("nan")}, "finite numbers, got lr=nan"),
                         ({"weight_decay": float("inf")}, "finite numbers, got weight_decay=inf"),
                         ({"momentum": 1.0}, "0 <= momentum < 1"), ({"weight_decay": -1e-4}, "weight_decay >= 0"),
                         ({"label_smoothing": 1.0}, "label_smoothing < 1"),
                         ({"freeze_bn_after": 0}, "freeze_bn_after=0: name an epoch")):
        with pytest.raises(ValueError, match=message):
            train.Recipe(**{"epochs": 2, "lr": 0.1, **bad})


class Killed(Exception):
    pass


def test_an_interrupted_run_resumes_with_nothing_lost(folder, tmp_path):
    images = data.ImageTensors.from_folder(folder / "train", 32, progress=False)
    recipe = train.Recipe(epochs=3, lr=0.05, batch_size=12)

    def batches(epoch):
        return images.batches(12, augment=True, shuffle=True, seed=epoch)

    def fresh():
        torch.manual_seed(0)
        return qzoo.resnet18(num_classes=NUM_CLASSES)

    straight = fresh()
    train.fit(straight, batches, recipe, tmp_path / "straight", progress=False)

    def dies_in_epoch_2(epoch):
        return _Dying(batches(epoch)) if epoch == 1 else batches(epoch)

    interrupted = fresh()
    with pytest.raises(Killed):
        train.fit(interrupted, dies_in_epoch_2, recipe, tmp_path / "resumed", progress=False)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1
    resumed = fresh()
    history = train.fit(resumed, batches, recipe, tmp_path / "resumed", progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="another recipe"):
        train.fit(fresh(), batches, train.Recipe(epochs=3, lr=0.01), tmp_path / "resumed", progress=False)


class _Dying:
    """An epoch's batches that die after one step, like a process killed mid-epoch."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        iterator = iter(self.batches)
        yield next(iterator)
        raise Killed


def test_a_malicious_optimizer_file_in_a_checkpoint_never_runs(tmp_path, monkeypatch):
    sentinel = tmp_path / "pwned"
    monkeypatch.setenv("QZOO_SENTINEL", str(sentinel))
    model = qzoo.resnet18(num_classes=NUM_CLASSES)
    recipe = train.Recipe(epochs=1, lr=0.01, batch_size=4)
    batch = (images(4, seed=0), torch.arange(4))
    train.fit(model, lambda epoch: [batch], recipe, tmp_path / "run", progress=False)
    torch.save({"state": PicklePayload()}, tmp_path / "run" / "checkpoint" / "optimizer.pt")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(Exception, match="Weights only load failed"):
        train.load_checkpoint(tmp_path / "run", model, optimizer)
    assert not sentinel.exists()


def small_qat_mobilenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return qzoo.mobilenet_v2(width_mult=0.25, num_classes=3, dropout=0.5, prepare="qat")


def test_training_with_dropout_repeats_bit_for_bit_and_leaves_the_callers_generator_alone(tmp_path):
    """MobileNetV2's dropout draws from a generator seeded by the recipe and the epoch: two runs agree."""
    batches = [(images(6, seed=s), torch.tensor([0, 1, 2, 0, 1, 2])) for s in range(2)]
    recipe = train.Recipe(epochs=2, lr=0.01, batch_size=6)
    digests = []
    for run in ("a", "b"):
        model = small_qat_mobilenet()
        before = torch.get_rng_state()
        train.fit(model, lambda epoch: batches, recipe, tmp_path / run, progress=False)
        assert torch.equal(torch.get_rng_state(), before)
        digests.append(qzoo.serialization.state_digest(model))
    assert digests[0] == digests[1]
    other = small_qat_mobilenet()
    train.fit(other, lambda epoch: batches, dataclasses.replace(recipe, seed=1), tmp_path / "c", progress=False)
    assert qzoo.serialization.state_digest(other) != digests[0]  # the seed is what made them equal


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    batches = [(images(6, seed=0), torch.tensor([0, 1, 2, 0, 1, 2]))]
    recipe = train.Recipe(epochs=1, lr=0.01, batch_size=6)
    train.fit(small_qat_mobilenet(), lambda epoch: batches, recipe, tmp_path, identity={"source": "a"},
              progress=False)
    with pytest.raises(ValueError, match="checkpoint of another run.*'source': 'a'"):
        train.fit(small_qat_mobilenet(), lambda epoch: batches, recipe, tmp_path, identity={"source": "b"},
                  progress=False)


def test_the_decoded_cache_follows_file_contents_not_sizes_and_times(tmp_path):
    """Replacing every image by a same-size file with the old mtime (cp -p, rsync -t) is new data."""
    import os

    import numpy as np
    from PIL import Image

    def write(seed: int) -> None:
        generator = np.random.default_rng(seed)
        for name in ("cat", "dog"):
            for i in range(3):
                path = tmp_path / "set" / name / f"{i}.bmp"  # uncompressed: every file has the same size
                path.parent.mkdir(parents=True, exist_ok=True)
                stat = path.stat() if path.exists() else None
                Image.fromarray(generator.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
                if stat is not None:
                    assert path.stat().st_size == stat.st_size
                    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    write(0)
    first = data.ImageTensors.from_folder(tmp_path / "set", 32, progress=False)
    write(1)
    again = data.ImageTensors.from_folder(tmp_path / "set", 32, progress=False)
    fresh = data.ImageTensors.from_folder(tmp_path / "set", 32, cache=False, progress=False)
    assert not torch.equal(first.images, fresh.images) and torch.equal(again.images, fresh.images)


@pytest.mark.parametrize("mode", ["LA", "1"])
def test_grey_with_alpha_and_one_bit_images_decode_like_their_rgb(mode, tmp_path):
    """Modes whose conversion to RGB loses nothing a classifier sees are read, not refused."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    (tmp_path / "set" / "a").mkdir(parents=True)
    image.save(tmp_path / "set" / "a" / "0.png")
    decoded = data.ImageTensors.from_folder(tmp_path / "set", 32, cache=False, progress=False).images[0]
    expected = torch.from_numpy(np.array(Image.open(tmp_path / "set" / "a" / "0.png").convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(decoded, expected) and decoded.float().std() > 0


def test_sixteen_bit_grey_is_rounded_and_sixteen_bit_colour_refused(tmp_path):
    """Grey: the nearest 8-bit level, not PIL's saturated white. Colour: PIL keeps only the high byte,
    so the file is refused with the fix rather than silently cut."""
    import numpy as np

    generator = np.random.default_rng(0)
    grey = generator.integers(0, 65536, (32, 32), dtype=np.uint16)
    (tmp_path / "grey" / "a").mkdir(parents=True)
    write_png16(tmp_path / "grey" / "a" / "0.png", grey)
    decoded = data.ImageTensors.from_folder(tmp_path / "grey", 32, cache=False, progress=False).images[0]
    assert torch.equal(decoded, torch.from_numpy(np.rint(grey / 257.0).astype(np.uint8)).expand(3, 32, 32))
    (tmp_path / "colour" / "a").mkdir(parents=True)
    write_png16(tmp_path / "colour" / "a" / "0.png", generator.integers(0, 65536, (32, 32, 3), dtype=np.uint16))
    with pytest.raises(ValueError, match=r"0\.png has 16 bits per colour channel.*convert it to 8 bits"):
        data.ImageTensors.from_folder(tmp_path / "colour", 32, cache=False, progress=False)


def test_bf16_autocast_is_refused_off_cuda_and_for_qat(tmp_path):
    """bf16 is for float training on a GPU (the CIFAR-10 ResNet18 ran so on an H200): on the CPU, or for a
    QAT model whose fake quantization must see float32, it is refused before any step."""
    batches = [(images(6, seed=0), torch.tensor([0, 1, 2, 0, 1, 2]))]
    recipe = train.Recipe(epochs=1, lr=0.01, batch_size=6)
    with pytest.raises(ValueError, match="bf16 autocast is for float training on a CUDA device"):
        train.fit(qzoo.mobilenet_v2(num_classes=3, width_mult=0.25), lambda epoch: batches, recipe, tmp_path / "a",
                  progress=False, device="cpu", bf16=True)
    with pytest.raises(ValueError, match="QAT simulates int8 in float32"):
        train.fit(small_qat_mobilenet(), lambda epoch: batches, recipe, tmp_path / "b", progress=False,
                  device="cuda", bf16=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_augmentation_crops_and_flips_each_image_as_its_random_draws_say():
    """The batched crop-and-flip (one indexing op) is the per-image definition: image i is the 32x32 window
    at (rows[i], cols[i]) of its 4-pixel zero-padded copy, mirrored when flips[i], from the same draws."""
    generator = torch.Generator().manual_seed(3)
    batch = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=generator)
    out = data._random_crop_flip(batch, torch.Generator().manual_seed(7))
    draws = torch.Generator().manual_seed(7)
    rows, cols = (torch.randint(0, 9, (64,), generator=draws) for _ in range(2))
    flips = torch.rand(64, generator=draws) < 0.5
    padded = torch.nn.functional.pad(batch, (4, 4, 4, 4))
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    for i in range(64):
        window = padded[i, :, rows[i]:rows[i] + 32, cols[i]:cols[i] + 32]
        assert torch.equal(out[i], window.flip(-1) if flips[i] else window)
    assert 0 < int(flips.sum()) < 64 and len(set(rows.tolist())) > 3  # the draws vary: the check covers both paths


def test_cutout_zeroes_one_clipped_square_per_image_after_normalizing():
    """``cutout=8``: each normalized image is 0 exactly on the 8x8 square centred at its random pixel (clipped
    at the border) and as without cutout elsewhere; the crop-and-flip draws come first, so cutout=0 gives
    the batches of before; a negative side is refused."""
    pixels = torch.randint(1, 255, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tensors = data.ImageTensors(pixels, torch.arange(40) % 10, tuple(str(i) for i in range(10)))
    (plain, labels), = tensors.batches(40, augment=True, seed=4)
    (cut, cut_labels), = tensors.batches(40, augment=True, cutout=8, seed=4)
    assert torch.equal(labels, cut_labels)
    erased = cut == 0
    assert not (plain == 0).any()  # pixels 1..254 never normalize to exactly 0 here: every 0 is cutout's
    assert torch.equal(erased, erased[:, :1].expand_as(erased))  # the same square in every channel
    assert torch.equal(cut[~erased], plain[~erased])
    areas = erased[:, 0].sum(dim=(1, 2))
    assert areas.max() == 64 and 16 <= areas.min() < 64  # whole squares inside, clipped ones at the border
    for image in erased[:, 0]:
        rows, cols = image.any(1).nonzero().flatten(), image.any(0).nonzero().flatten()
        assert image.sum() == len(rows) * len(cols) and rows.diff().eq(1).all() and cols.diff().eq(1).all()
    with pytest.raises(ValueError, match="cutout=-1"):
        tensors.batches(40, cutout=-1)


def test_compiled_training_follows_eager_training_and_is_refused_for_qat(tmp_path, monkeypatch):
    """``compile_mode`` trains through ``torch.compile`` in that mode: here with its AOT-autograd backend
    without code generation (no compiler needed), the losses follow eager training's; the checkpoint holds
    the trained model's own keys and values (not the compiled wrapper's ``_orig_mod.``). QAT and unknown
    modes are refused before any work."""
    modes = []
    real_compile = torch.compile

    def traced(module, mode=None):
        modes.append(mode)
        return real_compile(module, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", traced)
    recipe = train.Recipe(epochs=2, lr=0.05, batch_size=8)
    batch = [(images(8, seed=s), torch.arange(8) % NUM_CLASSES) for s in range(3)]
    histories = {}
    for mode in (None, "reduce-overhead"):
        torch.manual_seed(0)
        model = qzoo.mobilenet_v2(num_classes=NUM_CLASSES)
        histories[mode] = train.fit(model, lambda epoch: batch, recipe, tmp_path / str(mode), progress=False,
                                    compile_mode=mode)
    assert modes == ["reduce-overhead"]
    eager, compiled = ([h["loss"] for h in histories[mode]] for mode in (None, "reduce-overhead"))
    assert eager[1] < eager[0] and compiled == pytest.approx(eager, rel=1e-3)
    restored = qzoo.mobilenet_v2(num_classes=NUM_CLASSES)
    assert train.load_checkpoint(tmp_path / "reduce-overhead", restored)["epoch"] == 2  # strict: the model's keys
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), model.state_dict().values()))
    qat = qzoo.mobilenet_v2(num_classes=NUM_CLASSES, prepare="qat")
    for model, mode in ((qat, "default"), (qzoo.mobilenet_v2(num_classes=NUM_CLASSES), "fastest")):
        with pytest.raises(ValueError, match="compile_mode=.*for float training"):
            train.fit(model, lambda epoch: batch, recipe, tmp_path / "refused", progress=False, compile_mode=mode)
    assert modes == ["reduce-overhead"] and not (tmp_path / "refused").exists()


def test_evaluate_ranks_equal_logits_by_class_index_and_counts_the_ties():
    """int8 logits lie on a grid of at most 256 codes and tie at the top (the shipped CIFAR-10 MobileNetV2 PTQ
    folder on 47 of its 2,000 sample images); `topk` orders equal values as its kernel happens to (its first
    index changes with k), so every accuracy qzoo reports ranks ties by the lower class index, as `argmax`."""
    grid = torch.randint(0, 6, (4000, 10), generator=torch.Generator().manual_seed(0)).float()  # many ties
    ranked = train.top_classes(grid, 10)
    assert torch.equal(ranked[:, 0], grid.argmax(1))
    for k in (1, 2, 5):
        assert torch.equal(train.top_classes(grid, k), ranked[:, :k])
    assert bool((grid.gather(1, ranked).diff(dim=1) <= 0).all())
    equal_neighbours = grid.gather(1, ranked).diff(dim=1) == 0
    assert bool((ranked.diff(dim=1)[equal_neighbours] > 0).all())  # among equal scores, lower index first
    tied = (grid == grid.max(1, keepdim=True).values).sum(1) > 1
    assert torch.equal(train.tied_at_top(grid), tied) and 0 < int(tied.sum()) < len(grid)

    labels = torch.randint(0, 10, (4000,), generator=torch.Generator().manual_seed(1))
    metrics = train.evaluate(torch.nn.Identity(), [(grid[:1500], labels[:1500]), (grid[1500:], labels[1500:])])
    assert metrics["acc1"] == 100 * int((grid.argmax(1) == labels).sum()) / 4000
    assert metrics["acc5"] == 100 * int((ranked[:, :5] == labels[:, None]).any(1).sum()) / 4000
    assert metrics["ties"] == int(tied.sum()) and metrics["images"] == 4000

    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    assert train.top_classes(scores, 3).tolist() == [[1, 2, 0], [0, 1, 2], [3, 2, 1]]
    metrics = train.evaluate(torch.nn.Identity(), [(scores, torch.tensor([2, 3, 3]))])
    assert metrics["ties"] == 2 and round(metrics["acc1"], 2) == 33.33 and metrics["acc5"] == 100


def test_refresh_batchnorm_fills_statistics_from_data_and_keeps_them_when_it_cannot():
    """Statistics become the data's (cumulative average, momentum and mode restored); no batches, a failing
    batch or a model without BatchNorm (an int8 one: folded) leave the model as it was and say why."""
    model = qzoo.resnet18(num_classes=NUM_CLASSES).eval()
    x = images(8, seed=1)
    train.refresh_batchnorm(model, x.split(4))
    first = model.bn1
    expected = torch.nn.functional.conv2d(x, model.conv1.weight, stride=2, padding=3).mean((0, 2, 3))
    assert torch.allclose(first.running_mean, expected, atol=1e-5) and first.momentum == 0.1 and not model.training
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def failing():
        yield x[:4]
        raise OSError("a batch failed to load")

    for batches, error, message in (([], ValueError, "got no batches"), (failing(), OSError, "failed to load")):
        with pytest.raises(error, match=message):
            train.refresh_batchnorm(model, batches)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and not model.training
    int8 = qzoo.quantize(model, [x], progress=False)
    with pytest.raises(ValueError, match="no BatchNorm layers .* refresh the float model before quantizing"):
        train.refresh_batchnorm(int8, [x])


def test_fit_and_evaluate_refuse_what_would_give_a_silent_result(tmp_path):
    """An epoch without batches would be checkpointed as trained (loss 0), an int8 or PTQ-prepared model fails deep
    in autograd, and labels beyond the model's classes would score 0 % as if measured: each is refused by name."""
    x, y = images(8, seed=1), torch.arange(8) % 3
    recipe = train.Recipe(epochs=1, lr=0.01, batch_size=4)
    model = qzoo.resnet18(num_classes=3)
    with pytest.raises(ValueError, match=r"epoch 1 got no batches \(batches\(0\) yielded nothing\)"):
        train.fit(model, lambda epoch: [], recipe, tmp_path / "empty", progress=False)
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())  # no checkpoint written
    int8 = qzoo.quantize(qzoo.resnet18(num_classes=3).eval(), [x], progress=False)
    prepared = qzoo.prepare_ptq(qzoo.resnet18(num_classes=3))
    for refused, kind in ((int8, "an int8"), (prepared, "a PTQ-prepared")):
        with pytest.raises(ValueError, match=f"fit trains float or QAT-prepared models, not {kind} one"):
            train.fit(refused, lambda epoch: [(x, y)], recipe, tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="a label is 7 but the model scores 3 classes"):
        train.evaluate(model, [(x, y + 5)])
    assert train.evaluate(model, [(x, y)])["images"] == 8


def test_channels_last_training_follows_contiguous_training_and_hands_the_model_back_contiguous(tmp_path):
    """``fit(channels_last=True)`` (cuDNN's fast layout for bf16 on a GPU; the H200 runs use it) trains the same
    model as the default layout, and the model comes back in the default layout (safetensors and users' code expect
    it). In float64: a random-init MobileNetV2 on batches of 8 amplifies float32 rounding (the layouts' kernels sum
    in other orders) by about 2 % per step, which would hide a real difference."""
    recipe = train.Recipe(epochs=2, lr=0.05, batch_size=8)
    batch = [(images(8, seed=s).double(), torch.arange(8) % NUM_CLASSES) for s in range(3)]
    trained = {}
    for layout in (False, True):
        torch.manual_seed(0)
        model = qzoo.mobilenet_v2(num_classes=NUM_CLASSES, width_mult=0.5).double()
        history = train.fit(model, lambda epoch: batch, recipe, tmp_path / str(layout), progress=False,
                            channels_last=layout)
        trained[layout] = model, [h["loss"] for h in history]
    (plain, plain_losses), (nhwc, nhwc_losses) = trained[False], trained[True]
    assert nhwc_losses == pytest.approx(plain_losses, rel=1e-9)
    torch.manual_seed(0)
    initial = qzoo.mobilenet_v2(num_classes=NUM_CLASSES, width_mult=0.5).double().state_dict()
    assert all(not torch.equal(initial[name], value) for name, value in nhwc.named_parameters())  # it trained
    weights = [p for p in nhwc.parameters() if p.ndim == 4]
    assert weights and all(p.is_contiguous() for p in weights)
    for a, b in zip(plain.state_dict().values(), nhwc.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # the net amplifies 1e-16 to 1e-8 in 6 steps


def test_seconds_per_step_times_fits_steps_and_leaves_the_model_as_it_was(tmp_path):
    """``seconds_per_step`` runs fit's own step (here channels-last) to size a run: a positive warm-up and step time,
    and the model's weights, BatchNorm statistics, gradients, mode, layout and the caller's random generator are
    untouched; too few batches to time any is refused."""
    torch.manual_seed(0)
    model = qzoo.mobilenet_v2(num_classes=NUM_CLASSES, width_mult=0.5).eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    batches = [(images(8, seed=s), torch.arange(8) % NUM_CLASSES) for s in range(5)]
    generator_state = torch.get_rng_state()
    warm_up, per_step = train.seconds_per_step(model, batches, train.Recipe(epochs=1, lr=0.5), warmup_steps=2,
                                               channels_last=True)
    assert warm_up > 0 and per_step > 0
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert not model.training and all(p.grad is None and p.is_contiguous() for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), generator_state)
    trained = copy.deepcopy(model)
    train.fit(trained, lambda epoch: batches, train.Recipe(epochs=1, lr=0.5), tmp_path, progress=False)
    assert not all(torch.equal(before[n], v) for n, v in trained.state_dict().items())  # the same steps do train
    with pytest.raises(ValueError, match="more batches than warmup_steps=5"):
        train.seconds_per_step(model, batches, train.Recipe(epochs=1, lr=0.5), warmup_steps=5)
