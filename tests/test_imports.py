"""The layering of qzoo's modules: no import cycles, and the boundaries the design names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qzoo"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> dict[str, set[str]]:
    """Every module ``name`` imports (anywhere in the file, functions included): qzoo's and others'."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, set[str]] = {"qzoo": set(), "other": set()}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # ``from . import x`` imports the submodule x when there is one, else a name of the package
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            found["qzoo" if target.split(".")[0] == "qzoo" else "other"].add(target)
    return found


GRAPH = {name: {t for t in imports_of(name)["qzoo"] if t in MODULES and t != name} for name in MODULES}


def find_cycle() -> list[str] | None:
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                return trail[trail.index(target):] + [target] if target in trail else [name, target]
            if target not in state and (cycle := visit(target, [*trail, target])):
                return cycle
        state[name] = "done"
        return None

    for name in sorted(MODULES):
        if name not in state and (cycle := visit(name, [name])):
            return cycle
    return None


def test_the_walk_sees_the_edges_it_should():
    assert "qzoo._files" in GRAPH["qzoo.models._factory"] and "qzoo.pretrained" in GRAPH["qzoo.hub"]
    assert len(MODULES) >= 25


def test_no_import_cycles():
    assert find_cycle() is None, f"import cycle: {' -> '.join(find_cycle())}"


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"qzoo"}))
def test_no_module_imports_the_package_itself(name):
    """``qzoo/__init__`` imports every module, so importing it from below is a cycle through the package."""
    assert "qzoo" not in GRAPH[name]


@pytest.mark.parametrize(("outside", "only_in"), [
    ("torch.ao", {"qzoo.quantization"}),
    ("huggingface_hub", {"qzoo.hub"}),
])
def test_third_party_boundaries(outside, only_in):
    users = {name for name in MODULES
             if any(t == outside or t.startswith(outside + ".") for t in imports_of(name)["other"])}
    assert users == only_in


def test_models_never_import_the_hub_the_cli_or_the_jobs():
    above = {"qzoo.hub", "qzoo.cli", "qzoo.workflow", "qzoo.demo", "qzoo.train", "qzoo.data"}
    for name in (n for n in MODULES if n.startswith("qzoo.models")):
        assert not GRAPH[name] & above, name


def test_the_ground_floor_imports_nothing_of_qzoo():
    for name in ("qzoo._files", "qzoo._version", "qzoo._record", "qzoo._tracing", "qzoo.registry"):
        assert GRAPH[name] == set(), name
