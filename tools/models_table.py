"""Write the table of every registered model into docs/models.md (between the ``models-table`` markers).

    python tools/models_table.py           # rewrite the table
    python tools/models_table.py --check   # exit 1 if the table in docs/models.md is not what the registry gives

Parameters are counted here, on the meta device, for the 1000-class head and the model as its
published weights build it (no auxiliary heads); GFLOPs are torchvision's
figure for its float weights at their crop size (``meta["_ops"]``), or counted the same way for models
without torchvision weights; weights come from the catalogue.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import qzoo
from qzoo import pretrained, registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"
START, END = "<!-- models-table:start -->", "<!-- models-table:end -->"


def _parameters(spec: registry.ModelSpec) -> float:
    with torch.device("meta"):  # as published: GoogLeNet's and Inception's auxiliary heads left out
        model = spec.factory(weights=None, **spec.published_with)
    return sum(p.numel() for p in model.parameters()) / 1e6


def _gflops(spec: registry.ModelSpec) -> str:
    """torchvision's figure (``meta["_ops"]``, multiply-accumulates), or for models without torchvision
    weights the same quantity counted by torch's FlopCounterMode at the model's crop size (FLOPs / 2)."""
    float_weights = spec.float_weights.DEFAULT if spec.float_weights else None
    if float_weights is not None:
        return f"{float_weights.meta['_ops']:.2f}" if "_ops" in float_weights.meta else "-"
    crop = spec.input_size[1]
    with torch.device("meta"):
        model = spec.factory(weights=None, **spec.published_with).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 3, crop, crop))
    return f"{counter.get_total_flops() / 2e9:.2f}"


def _row(spec: registry.ModelSpec) -> str:
    flops = _gflops(spec)
    resize, crop = spec.input_size
    int8 = (", ".join(sorted({member.meta.get("backend", "?") for member in spec.int8_weights}))
            if spec.int8_weights else "no")
    qzoo_entries = [e.name for e in pretrained.index_entries() if e.architecture == spec.name]
    family = spec.family.rsplit(".", 1)[-1]
    return (f"| `{spec.name}` | {family} | {_parameters(spec):.2f} | {flops} | {resize} / {crop} | "
            f"`{spec.float_weights.__name__ if spec.float_weights else '-'}` | {int8} | "
            f"{', '.join(f'`{n}`' for n in qzoo_entries) or '-'} |")


def render() -> str:
    """The table, one row per registered model in name order."""
    header = ("| model | family | params (M) | GFLOPs | resize / crop | float weights (torchvision enum) | "
              "torchvision int8 checkpoint | qzoo entries |\n|---|---|---:|---:|---|---|---|---|")
    return "\n".join([header, *(_row(spec) for spec in registry.model_specs())])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = DOC.read_text()
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    updated = f"{before}{START}\n{render()}\n{END}{after}"
    if args.check:
        if updated != text:
            sys.exit(f"{DOC} is out of date: run python tools/models_table.py (qzoo {qzoo.__version__})")
        return
    DOC.write_text(updated)
    print(f"{DOC}: {len(registry.model_specs())} models")


if __name__ == "__main__":
    main()
