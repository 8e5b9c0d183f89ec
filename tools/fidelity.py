"""Measure PTQ fidelity of each family's smallest member and write the table into docs/models.md.

    python tools/fidelity.py            # every model of the tests' HEAVY tier; x86 and qnnpack
    python tools/fidelity.py --no-docs  # print only

The networks are the test suite's trained-like random networks (``tests/test_quantization.py``:
small residual branches, refilled BatchNorm statistics, damped squeeze-excitation gates; plain
chains get BatchNorm shifts of 1), calibrated on 16 synthetic images and compared with float on
16 others: the cosine of the logits, and for the x86 model also ONNX Runtime's logits (qzoo's
export, docs/onnx.md). No ImageNet weights are involved: this
measures the quantization path of each architecture, not an accuracy.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import qzoo  # noqa: E402
from _catalogue import cpu_name  # noqa: E402
from helpers import HEAVY, cosine, images, input_size, quantized_copy, run  # noqa: E402
from test_quantization import trained_like  # noqa: E402

DOC = ROOT / "docs" / "models.md"
MARKERS = ("<!-- fidelity-table:start -->", "<!-- fidelity-table:end -->")


def measure(name: str) -> dict[str, float | str]:
    """Cosine to float of the x86 and qnnpack int8 models and of ONNX Runtime's run of the x86 one."""
    size = input_size(name)
    model = trained_like(name, 0.1)
    held_out = images(16, seed=2, size=size)
    with torch.no_grad():
        reference = model(held_out)
    row: dict[str, float | str] = {"size": size}
    for backend in ("x86", "qnnpack"):
        int8 = quantized_copy(model, backend, calibration=images(16, seed=1, size=size))
        row[backend] = cosine(reference, run(int8, held_out, backend))
        if backend == "x86":
            from qzoo.onnx_export import OnnxRuntimeModel, export_onnx

            row["onnxruntime"] = cosine(reference, OnnxRuntimeModel(export_onnx(int8))(held_out))
    return row


def markdown(rows: dict[str, dict[str, float | str]], command: str) -> str:
    def cell(value: float | str) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| model | input | x86 (7-bit activations) | qnnpack (8-bit) | x86 model on ONNX Runtime |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| `{name}` | {row['size']}x{row['size']} | {cell(row['x86'])} | {cell(row['qnnpack'])} | "
              f"{cell(row['onnxruntime'])} |" for name, row in rows.items()]
    lines += ["", f"Cosine of int8 logits to float logits. Measured with `{command}` on {cpu_name()}, torch "
              f"{torch.__version__}, torchvision {torchvision.__version__}, qzoo {qzoo.__version__}, "
              f"{datetime.date.today().isoformat()}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=HEAVY)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/models.md")
    args = parser.parse_args()
    rows = {}
    for name in args.models:
        rows[name] = measure(name)
        print(name, rows[name], flush=True)
    table = markdown(rows, " ".join(["python tools/fidelity.py", *sys.argv[1:]]))
    if not args.no_docs:
        text = DOC.read_text()
        start, end = (text.index(marker) for marker in MARKERS)
        DOC.write_text(text[:start + len(MARKERS[0])] + "\n" + table + text[end:])
    print(table)


if __name__ == "__main__":
    main()
