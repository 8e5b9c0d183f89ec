"""Write the table of every registered model into docs/models.md (between the ``models-table`` markers), and
the table of every exported model and block class into docs/quantizable-blocks.md (``classes-table``).

    python tools/models_table.py           # rewrite the tables
    python tools/models_table.py --check   # exit 1 if a table in docs/ is not what the code gives

Parameters are counted here, on the meta device, for the 1000-class head and the model as its
published weights build it (no auxiliary heads); GFLOPs are torchvision's
figure for its float weights at their crop size (``meta["_ops"]``), or counted the same way for models
without torchvision weights; weights come from the catalogue.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import qzoo
from qzoo import pretrained, registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalogue import replace_between  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"
START, END = "<!-- models-table:start -->", "<!-- models-table:end -->"
CLASSES_DOC = DOC.with_name("quantizable-blocks.md")
CLASSES_MARKERS = ("<!-- classes-table:start -->", "<!-- classes-table:end -->")


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


def exported_classes() -> list[type]:
    """The model and block classes ``qzoo`` exports from ``qzoo/models/``, in name order."""
    return sorted((obj for obj in map(qzoo.__dict__.get, qzoo.__all__)
                   if inspect.isclass(obj) and obj.__module__.startswith("qzoo.models.")), key=lambda c: c.__name__)


def render_classes() -> str:
    """One row per exported class: its file, the torchvision class it subclasses, its first docstring paragraph."""
    rows = ["| class | file | subclass of | what it is |", "|---|---|---|---|"]
    for cls in exported_classes():
        parent = next((f"`{base.__module__}.{base.__name__}`" for base in cls.__mro__[1:]
                       if base.__module__.startswith("torchvision.")), "-")
        summary = " ".join(inspect.getdoc(cls).split("\n\n", 1)[0].split())
        summary = re.sub(r":\w+:`([^`]+)`", r"`\1`", summary).replace("``", "`")  # reST roles and literals
        module = cls.__module__.rsplit(".", 1)[1]
        rows.append(f"| `{cls.__name__}` | `qzoo/models/{module}.py` | {parent} | {summary} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    for doc, markers, table in ((DOC, (START, END), render()), (CLASSES_DOC, CLASSES_MARKERS, render_classes())):
        text = doc.read_text()
        updated = replace_between(text, markers, table)
        if args.check and updated != text:
            sys.exit(f"{doc} is out of date: run python tools/models_table.py (qzoo {qzoo.__version__})")
        if not args.check:
            doc.write_text(updated)
    if not args.check:
        print(f"{DOC}: {len(registry.model_specs())} models; {CLASSES_DOC}: {len(exported_classes())} classes")


if __name__ == "__main__":
    main()
