"""The ``qzoo`` command line: it parses, calls the library and prints; nothing else."""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from collections.abc import Sequence
from typing import Any, get_args

import torch
import torchvision

from . import datasets, quantization, sensitivity, train, workflow
from ._files import IntegrityError
from ._version import __version__
from .benchmark import GLIBC_RAISED_THRESHOLDS, NOTABLE_PAGE_FAULTS
from .demo import run_cifar10_demo, run_demo
from .pretrained import Mode, get_weights, list_models, list_weights
from .registry import model_spec

_EXAMPLES = """examples:
  qzoo list --pretrained
  qzoo info mobilenet_v2.imagenet1k_qnnpack_v1
  qzoo demo
  qzoo predict photo.jpg --top 3
  qzoo ptq mobilenet_v2 --data torch/cifar10 --out runs/mbv2-int8    # CIFAR-10 fetched by torchvision
  qzoo ptq resnet18 --weights IMAGENET1K_V1 --data ~/imagenet-val-sample --out runs/r18-int8
  qzoo qat my-float-model/ --data cifar10-jpeg.tar.gz --epochs 2 --out my-qat-model/
  qzoo eval runs/r18-int8 --data torch/imagenet --data-dir ~/imagenet    # ImageNet's devkit and val tar
  qzoo sensitivity efficientnet_lite0 --weights DEFAULT --data ~/imagenet-sample --plot lite0.png
  qzoo bench runs/r18-int8
  qzoo export runs/r18-int8 --format torchscript --out r18-int8.pt
  qzoo export runs/r18-int8 --format onnx --out r18-int8.onnx    # pip install "qzoo[onnx]"
"""

X86_MACHINES = ("x86_64", "amd64", "i386", "i686")
"""``platform.machine()`` names of x86 CPUs."""
BACKEND_HELP = ("the int8 kernels to target: x86 (default; Intel and AMD CPUs), fbgemm (older x86), "
                "qnnpack (ARM and mobile), onednn (oneDNN's kernels, for Intel CPUs with VNNI)")
SOURCE_HELP = "a model name from `qzoo list`, a qzoo folder, a hub repo id or a weights entry name"
DATA_HELP = ("an ImageFolder (one sub-folder per class), a folder holding train/ and test/ ImageFolders, "
             f"a .tar.gz or .zip of one, or a data set name ({', '.join(datasets.NAMES)}) kept in --data-dir")
DATA_DIR_HELP = ("where named data sets live: torchvision downloads CIFAR there; ImageNet needs its devkit and "
                 "image tars there (default: the qzoo cache's datasets/torch)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a positive finite number")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number >= 0")
    return value


def _command(commands: Any, name: str, help: str, example: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _source(parser: argparse.ArgumentParser, data: bool = True) -> None:
    parser.add_argument("source", metavar="MODEL_OR_DIR", help=SOURCE_HELP)
    parser.add_argument("--weights", help="float weights for a model name (e.g. IMAGENET1K_V1)")
    parser.add_argument("--image-size", type=_positive_int,
                        help="crop size (default: the weights' preprocessing, else 224)")
    if data:
        parser.add_argument("--data", required=True, help=DATA_HELP)
        parser.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qzoo", description="Quantizable CNNs for PTQ and QAT.",
                                     epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    versions = f"qzoo {__version__} (torch {torch.__version__}, torchvision {torchvision.__version__})"
    parser.add_argument("--version", action="version", version=versions,
                        help="print qzoo's, torch's and torchvision's versions")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = _command(commands, "list", "list the models, or with --pretrained the weights entries",
                       "qzoo list --pretrained --json")
    listing.add_argument("--pretrained", action="store_true", help="list weights entries (architecture.tag)")
    info = _command(commands, "info", "describe a model or a weights entry", "qzoo info resnet18")
    info.add_argument("name", help="a model name (`qzoo list`) or a weights entry (`qzoo list --pretrained`)")
    demo = _command(commands, "demo", "PTQ of the shipped CIFAR-10 MobileNetV2 on the shipped CIFAR-10 sample "
                    "(float vs int8 accuracy, size, speed); with --model, any model on synthetic images",
                    "qzoo demo --model mobilenet_v2 --json")
    demo.add_argument("--model", help="run the synthetic-image demo with this model from `qzoo list`")
    demo.add_argument("--backend", default=quantization.DEFAULT_BACKEND, choices=quantization.BACKENDS,
                      help=BACKEND_HELP)
    demo.add_argument("--image-size", type=_positive_int, help="with --model (default 64)")
    demo.add_argument("--calibration-images", type=_positive_int, help="with --model (default 64)")
    ptq = _command(commands, "ptq", "calibrate, convert, evaluate float and int8 side by side, save the int8 model",
                   "qzoo ptq resnet18 --weights IMAGENET1K_V1 --data imagenet-sample --out runs/r18-int8")
    _source(ptq)
    ptq.add_argument("--calib-images", type=_positive_int, default=512,
                     help="calibration images, a class-balanced sample of the training split (default 512)")
    ptq.add_argument("--seed", type=int, default=0, help="picks the calibration sample (default 0)")
    ptq.add_argument("--backend", default=quantization.DEFAULT_BACKEND, choices=quantization.BACKENDS,
                     help=BACKEND_HELP)
    ptq.add_argument("--out", required=True, help="new or empty folder for the int8 model (config.json, "
                     "model.safetensors, card)")
    ptq.add_argument("--float-layers", metavar="NAMES", default="",
                     help="comma-separated layers to keep in float (names as `qzoo sensitivity` prints them)")
    ptq.add_argument("--per-tensor", action="store_true", help="one weight scale per layer instead of per channel")
    ptq.add_argument("--equalize", action="store_true",
                     help="cross-layer equalization and high-bias absorption before quantizing (exact in float)")
    ptq.add_argument("--bias-correction", action="store_true",
                     help="correct each layer's bias for its int8 error, on 64 calibration images")
    ptq.add_argument("--float-logits", action="store_true",
                     help="leave the output layer's sum unrounded: int8 weights and inputs, float logits without ties")
    ptq.add_argument("--overwrite", action="store_true", help="replace the qzoo model already in --out")
    qat = _command(commands, "qat", "quantization-aware fine-tuning (resumable; runs under torchrun)",
                   "torchrun --nproc_per_node=2 -m qzoo qat my-float-model/ --data cifar10/ "
                   "--epochs 2 --out my-qat-model/")
    _source(qat)
    qat.add_argument("--epochs", type=_positive_int, default=2, help="fine-tuning epochs (default 2)")
    qat.add_argument("--lr", type=_positive_float, default=0.005,
                     help="SGD's starting learning rate, cosine-annealed over the epochs (default 0.005)")
    qat.add_argument("--batch-size", type=_positive_int, default=128,
                     help="images per step in each process (under torchrun, the step sees N times as many; default 128)")
    qat.add_argument("--weight-decay", type=_non_negative_float, default=5e-5, help="SGD's weight decay (default 5e-5)")
    qat.add_argument("--backend", default=quantization.DEFAULT_BACKEND, choices=quantization.BACKENDS,
                     help=BACKEND_HELP)
    qat.add_argument("--out", required=True, help="new or empty folder (or one holding this run's training/ "
                     "checkpoint, which is resumed)")
    qat.add_argument("--float-logits", action="store_true",
                     help="leave the int8 model's output layer unrounded: float logits without ties")
    qat.add_argument("--overwrite", action="store_true", help="replace the qzoo model already in --out")
    evaluate = _command(commands, "eval", "top-1/top-5 accuracy on the test split", "qzoo eval runs/r18-int8 --data d")
    _source(evaluate)
    sens = _command(commands, "sensitivity", "which layers lose accuracy in int8: per-layer SQNR and top-1 "
                    "agreement with float, each layer alone in int8 and alone in float (simulated int8)",
                    "qzoo sensitivity efficientnet_lite0 --weights DEFAULT --data imagenet-sample --images 64")
    _source(sens)
    sens.add_argument("--images", type=_positive_int, default=64, help="test images to measure on (default 64)")
    sens.add_argument("--calib-images", type=_positive_int, default=256,
                      help="calibration images, a class-balanced sample of the training split (default 256)")
    sens.add_argument("--seed", type=int, default=0, help="picks the calibration sample (default 0)")
    sens.add_argument("--backend", default=quantization.DEFAULT_BACKEND, choices=quantization.BACKENDS,
                      help=BACKEND_HELP)
    sens.add_argument("--rows", type=_positive_int, default=15, help="layers in the printed table (default 15)")
    sens.add_argument("--plot", metavar="PNG", help='also write a bar chart (pip install "qzoo[plot]")')
    sens.add_argument("--max-drop", metavar="POINTS", type=_non_negative_float,
                      help="also find the fewest layers to keep float for at most this top-1 drop")
    sens.add_argument("--validation-images", type=_positive_int, default=500,
                      help="test images the --max-drop search measures top-1 on (default 500)")
    bench = _command(commands, "bench", "fp32 vs int8 latency (qzoo's optimized int8 path and eager; batch 1 and 16 unless --batches, side by side) and file sizes",
                     "qzoo bench resnet18 --image-size 224 --batches 1 8 32")
    _source(bench, data=False)
    bench.add_argument("--backend", choices=quantization.BACKENDS, help=f"for a float source (default {quantization.DEFAULT_BACKEND})")
    bench.add_argument("--batches", type=_positive_int, nargs="+", default=[1, 16],
                       help="batch sizes to time, each side by side (default 1 16)")
    bench.add_argument("--repeats", type=_positive_int, default=20,
                       help="interleaved calls per runner and batch size; medians are reported (default 20)")
    bench.add_argument("--threads", type=_positive_int,
                       help="intra-op threads for torch and ONNX Runtime (default: torch's, from OMP_NUM_THREADS or "
                            "the cores)")
    export = _command(commands, "export", "write an int8 model as a frozen TorchScript or an ONNX file",
                      "qzoo export runs/r18-int8 --format onnx --out r18.onnx")
    _source(export, data=False)
    export.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript",
                        help="torchscript: frozen graph, bit-exact; onnx: QDQ graph for ONNX Runtime")
    export.add_argument("--out", required=True, help="the file to write (new, or replaced with --overwrite)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    predict = _command(commands, "predict", "classify photographs with a pretrained model (int8 "
                       f"{workflow.PREDICT_DEFAULT} unless --model says otherwise)",
                       "qzoo predict photo.jpg holiday/ --top 3")
    predict.add_argument("images", nargs="+", metavar="IMAGE",
                         help="image files (JPEG, PNG, ...), or folders: the image files below them")
    predict.add_argument("--model", default=workflow.PREDICT_DEFAULT,
                         help="a weights entry, float or int8 (`qzoo list --pretrained`), a qzoo folder or a hub "
                              "repository; not a bare architecture (random weights)")
    predict.add_argument("--top", type=_positive_int, default=5, help="classes to show per image")
    return parser


def _print_predictions(results: list[dict[str, Any]]) -> None:
    for result in results:
        if "error" in result:
            print(f"qzoo predict: {result['error']}", file=sys.stderr)
            continue
        print(result["image"])
        for guess in result["top"]:
            print(f"  {guess['probability']:6.1%}  {guess['label']} ({guess['index']})")


def _backend_note(report: dict[str, Any]) -> None:
    """Under timings of qnnpack on an x86 CPU: those kernels are ARM's, and x86 is the backend to time here."""
    if report.get("latency_ms") and report.get("backend") == "qnnpack" and platform.machine().lower() in X86_MACHINES:
        print("  note: qnnpack's int8 kernels are written for ARM CPUs; on this x86 CPU the x86 backend is the fast one")


def _allocator_note(report: dict[str, Any]) -> None:
    """Under timings whose fp32 calls took their memory from the system again each time (glibc): that speed-up is
    partly glibc's malloc, which maps large activations afresh on every call; one environment variable changes it."""
    faults = {batch: count for batch, count in report.get("fp32_page_faults_per_call", {}).items()
              if count is not None and count > NOTABLE_PAGE_FAULTS}
    if faults and platform.libc_ver()[0] == "glibc":
        batch, count = max(faults.items(), key=lambda item: item[1])
        print(f"  note: fp32 took {count:,} page faults per call at batch {batch}: glibc's malloc maps its "
              "large activations afresh on every call, which slows fp32 and inflates int8's speed-up there; "
              f"GLIBC_TUNABLES={GLIBC_RAISED_THRESHOLDS} set before Python starts keeps that memory "
              "(docs/benchmarks.md)")


def _print_demo(report: dict) -> None:
    mib = 1024 * 1024
    print(f"qzoo demo: {report['model']}, PTQ for {report['backend']}, {report['calibration_images']} calibration "
          f"images of {report['image_size']}x{report['image_size']}, {report['threads']} threads")
    print("random weights on synthetic images: this measures int8 fidelity, size and speed, not accuracy")
    print(f"  float vs int8 cosine similarity  {report['cosine_similarity']:.4f}")
    print(f"  float vs int8 top-1 agreement    {report['top1_agreement']:.1%}")
    print(f"  state_dict size fp32 / int8      {report['float_bytes'] / mib:.2f} MiB / "
          f"{report['int8_bytes'] / mib:.2f} MiB ({report['size_ratio']:.2f}x)")
    for batch, times in report["latency_ms"].items():
        print(f"  batch {batch:>2} median fp32 / int8     {times['fp32']:.2f} ms / {times['int8']:.2f} ms "
              f"(int8 speed-up {report['speedup'][batch]:.2f}x)")
    _backend_note(report)
    _allocator_note(report)


def _print_info(result: dict[str, Any]) -> None:
    """``qzoo info`` as text: a model's documentation and entries, or an entry's fields one per line."""
    if "model" in result:
        print(f"{result['model']} ({result['family']})\n\n{result['doc']}\n")
        print("weights entries: " + (", ".join(result["weights"]) or "none (qzoo ptq makes int8 ones)"))
        return
    shown = {key: value for key, value in result.items() if value not in (None, "", {}, [], False)}
    width = max(map(len, shown))
    for key, value in shown.items():
        print(f"{key:<{width}}  {json.dumps(value) if isinstance(value, (dict, list)) else value}")


def _print_listing(names: list[str], pretrained: bool) -> None:
    """``qzoo list`` as a table: each model's family and weights entries, or each entry's mode, backend,
    recorded top-1 and file size (``--json`` keeps the plain list of names)."""
    if pretrained:
        rows = [("entry", "mode", "backend", "recorded acc@1 (data)", "MB")]
        for name in names:
            entry = get_weights(name)
            data, values = next(iter(entry.metrics.items()), ("", {}))
            top1 = f"{values['acc1']:.2f} ({data})" if "acc1" in values else "-"
            rows.append((name, entry.mode, entry.backend or "-", top1, f"{entry.file_size_mb:.1f}"))
    else:
        rows = [("model", "family", "weights entries (NAME.tag: qzoo info NAME.tag)")]
        for name in names:
            tags = {mode: ", ".join(entry.partition(".")[2] for entry in list_weights(name, mode)) for mode in get_args(Mode)}
            weights = "; ".join(f"{mode} {tags[mode]}" for mode in get_args(Mode) if tags[mode]) or "-"
            rows.append((name, model_spec(name).family.rpartition(".")[2], weights))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])


def _print_target(source: str, target: dict[str, Any]) -> None:
    """The target mode's answer and the ``qzoo ptq`` flags that apply it."""
    kept = ",".join(target["float_layers"])
    verdict = "meets" if target["met"] else "still misses"
    print(f"\nfewest float layers for a top-1 drop of at most {target['max_drop']:g} points ({target['images']} "
          f"images): {len(target['float_layers'])} ({kept or 'none'}); int8 {target['int8_top1']:.2f} % vs float "
          f"{target['float_top1']:.2f} %, {verdict} the bound")
    if kept:
        print(f"  apply: qzoo ptq {source} ... --float-layers {kept}")


def _counted(metrics: dict[str, Any]) -> str:
    """The image count, and how many of the images tie at the top (their top-1 went to the lower class index)."""
    tied = f", {metrics['ties']} tied at the top" if metrics.get("ties") else ""
    return f"{metrics['images']} images{tied}"


_USES = {"ptq": "calibrates on", "qat": "trains on", "sensitivity": "calibrates on"}


def _held_out_note(command: str, report: dict[str, Any]) -> None:
    """Say so when the accuracy was measured on the images the command also calibrated or trained on."""
    if report.get("held_out") is False:
        print(f"  note: the data has no train/ and test/ folders, so qzoo {command} {_USES[command]} images it "
              "also evaluates: these accuracies are not on held-out images (add a test/ split for one)")


def _random_weights_note(args: argparse.Namespace) -> None:
    """Say so when an accuracy command ran a bare architecture, whose weights are random."""
    if args.command in _USES or args.command == "eval":
        if args.source in list_models() and not args.weights:
            entries = ", ".join(list_weights(args.source, "float")) or "none yet"
            print(f"  note: {args.source} has random weights (a model name without --weights), so these accuracies "
                  f"mean nothing: add --weights (its float entries: {entries}) or name a trained folder")


def _calibration_note(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Say so when the train split held fewer images than --calib-images asked for."""
    used, asked = report.get("calibration_images"), getattr(args, "calib_images", None)
    if args.command == "ptq" and used is not None and asked is not None and used < asked:
        print(f"  note: the train split has {used} images, so all of them calibrated the model (--calib-images "
              f"asked for {asked})")


def _subset_note(report: dict[str, Any]) -> None:
    """Say so when QAT trained on images of only some of the model's classes: it fits the model to those."""
    trained, classes = report.get("trained_classes"), report.get("model_classes")
    if trained is not None and trained < classes:
        print(f"  note: the train split has images of {trained} of the model's {classes} classes; QAT fits the "
              "model to those and it will seldom predict the others (train on images of every class to keep "
              "them)")


def _print_report(report: dict[str, Any]) -> None:
    """A readable rendering of a workflow report: accuracies, sizes, speed-ups, output."""
    mib = 1024 * 1024
    for key in ("float", "int8"):
        if isinstance(report.get(key), dict):
            metrics = report[key]
            before = "; the source model, before QAT" if key == "float" and "history" in report else ""
            print(f"  {key:<5} acc@1 {metrics['acc1']:6.2f} %   acc@5 {metrics['acc5']:6.2f} %   "
                  f"({_counted(metrics)}{before})")
    if "acc1" in report:
        print(f"  acc@1 {report['acc1']:.2f} %   acc@5 {report['acc5']:.2f} %   ({_counted(report)})")
    if report.get("weakest_classes"):
        print("  weakest classes: " + ", ".join(f"{c['name']} {c['acc1']:.1f} %" for c in report["weakest_classes"]))
    if "float_file_bytes" in report:
        ratio = report["int8_file_bytes"] / report["float_file_bytes"]
        print(f"  file size fp32 / int8  {report['float_file_bytes'] / mib:.2f} MiB / "
              f"{report['int8_file_bytes'] / mib:.2f} MiB ({ratio:.2f}x)")
    for batch, times in report.get("latency_ms", {}).items():
        eager = f", eager int8 {times['int8 eager']:.2f} ms" if "int8 eager" in times else ""
        if "int8 onnxruntime" in times:
            eager += f", int8 on onnxruntime {times['int8 onnxruntime']:.2f} ms"
        print(f"  batch {batch:>2} median fp32 / int8  {times['fp32']:.2f} ms / {times['int8']:.2f} ms "
              f"(int8 speed-up {report['speedup'][batch]:.2f}x{eager})")
    _backend_note(report)
    _allocator_note(report)
    if "out" in report:
        print(f"  written to {report['out']}")


def _run(args: argparse.Namespace) -> dict[str, Any] | list[str]:
    """Call the one library function behind ``args.command``."""
    progress = not args.json
    if args.command == "list":
        return list_models(pretrained=args.pretrained)
    if args.command == "info":
        return workflow.describe(args.name)
    if args.command == "predict":
        return workflow.run_predict(args.images, source=args.model, top=args.top, progress=progress)
    if args.command == "demo":
        sizes = {"image_size": args.image_size, "calibration_images": args.calibration_images}
        given = {key: value for key, value in sizes.items() if value is not None}
        if args.model is None and given:
            flags = " and ".join("--" + key.replace("_", "-") for key in given)
            verb = "go" if len(given) > 1 else "goes"
            raise ValueError(f"{flags} {verb} with --model: without it the demo runs the shipped CIFAR-10 model on "
                             "the shipped sample, at its own size")
        if args.model is None:
            return run_cifar10_demo(backend=args.backend, progress=progress)
        return run_demo(args.model, backend=args.backend, progress=progress, **given)
    source = {"weights": args.weights, "image_size": args.image_size, "progress": progress}
    if args.command in ("ptq", "qat", "eval", "sensitivity"):
        source["data_dir"] = args.data_dir
    if args.command == "ptq":
        return workflow.run_ptq(args.source, args.data, args.out, backend=args.backend,
                                calib_images=args.calib_images, seed=args.seed, overwrite=args.overwrite,
                                options=workflow.PtqOptions(
                                    float_layers=tuple(n for n in args.float_layers.split(",") if n),
                                    weight_scheme="per_tensor" if args.per_tensor else "per_channel",
                                    equalize=args.equalize, bias_correction=args.bias_correction,
                                    float_logits=args.float_logits), **source)
    if args.command == "qat":
        return workflow.run_qat(args.source, args.data, args.out, epochs=args.epochs, lr=args.lr,
                                batch_size=args.batch_size, weight_decay=args.weight_decay, backend=args.backend,
                                overwrite=args.overwrite, float_logits=args.float_logits, **source)
    if args.command == "eval":
        return workflow.run_eval(args.source, args.data, **source)
    if args.command == "sensitivity":
        return workflow.run_sensitivity(args.source, args.data, images=args.images, calib_images=args.calib_images,
                                        seed=args.seed, backend=args.backend, plot=args.plot, max_drop=args.max_drop,
                                        validation_images=args.validation_images, **source)
    if args.command == "bench":
        return workflow.run_bench(args.source, repeats=args.repeats, backend=args.backend, threads=args.threads,
                                  batches=tuple(dict.fromkeys(args.batches)), **source)
    return workflow.run_export(args.source, args.out, format=args.format, overwrite=args.overwrite, **source)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qzoo`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        result = _run(args)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError, TimeoutError, IntegrityError) as error:
        print("qzoo: error: " + " ".join(str(error).split()), file=sys.stderr)  # one line, whatever the message
        return 2
    if train.rank_and_world()[0] != 0:
        return 0
    failed = args.command == "predict" and any("error" in r for r in result)
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.command == "predict":
        _print_predictions(result)
    elif args.command == "list":
        _print_listing(result, args.pretrained)
    elif args.command == "demo" and args.model is None:
        print(f"qzoo demo: PTQ of {result['model']} for {result['backend']} on the shipped CIFAR-10 sample "
              f"({result['calibration_images']} calibration images, {result['int8']['images']} test images, "
              f"{result['threads']} threads)")
        _print_report(result)
    elif args.command == "demo":
        _print_demo(result)
    elif args.command == "info":
        _print_info(result)
    elif args.command == "sensitivity":
        print(f"qzoo sensitivity: {args.source}, {result['backend']}, {result['calibration_images']} calibration "
              f"images, {result['seconds']:.0f} s")
        print(sensitivity.format_table(result, args.rows))
        if "target" in result:
            _print_target(args.source, result["target"])
        _held_out_note(args.command, result)
        _random_weights_note(args)
    else:
        print(f"qzoo {args.command}: {args.source}")
        _print_report(result)
        _held_out_note(args.command, result)
        _calibration_note(args, result)
        _subset_note(result)
        _random_weights_note(args)
    return 1 if failed else 0
