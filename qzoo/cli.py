"""The ``qzoo`` command line: it parses, calls the library and prints; nothing else."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import quantization
from .demo import run_demo
from .registry import list_models

_EXAMPLES = """examples:
  qzoo list
  qzoo demo
  qzoo demo --model mobilenet_v2 --backend qnnpack --json
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qzoo", description="Quantizable CNNs for PTQ and QAT.",
                                     epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list the models qzoo can build", epilog="example: qzoo list --json")
    listing.add_argument("--json", action="store_true", help="print JSON")
    demo = commands.add_parser(
        "demo", help="PTQ a model on built-in synthetic images and compare float with int8",
        epilog="example: qzoo demo --model mobilenet_v2 --json",
    )
    demo.add_argument("--model", default="resnet18", help="a name from `qzoo list` (default: resnet18)")
    demo.add_argument("--backend", default="x86", choices=quantization.BACKENDS)
    demo.add_argument("--image-size", type=int, default=64)
    demo.add_argument("--calibration-images", type=int, default=64)
    demo.add_argument("--json", action="store_true", help="print JSON")
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qzoo`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            names = list_models()
            print(json.dumps(names) if args.json else "\n".join(names))
        elif args.command == "demo":
            report = run_demo(args.model, backend=args.backend, image_size=args.image_size,
                              calibration_images=args.calibration_images, progress=not args.json)
            print(json.dumps(report, indent=2)) if args.json else _print_demo(report)
    except (ValueError, TypeError, RuntimeError) as error:
        print(f"qzoo: error: {error}", file=sys.stderr)
        return 2
    return 0
