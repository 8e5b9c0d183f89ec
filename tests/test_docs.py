"""The README stays short and points at docs that exist; the generated tables have their markers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import qzoo

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_short_and_keeps_the_ci_test_command():
    assert len(README.splitlines()) <= 200
    command = README.split("<!-- test-command:start -->", 1)[1].split("<!-- test-command:end -->", 1)[0]
    assert "bash tests/run-legs.sh" in command
    script = (ROOT / "tests" / "run-legs.sh").read_text()
    assert '-e ".[test]"' in script and "-m pytest" in script and "python3 -m venv --clear" in script
    assert sorted(p.stem for p in (ROOT / "tests" / "legs").glob("*.txt")) == ["newest", "oldest"]


def test_every_link_into_docs_exists():
    links = set(re.findall(r"\]\((docs/[^)#]+)", README))
    assert {"docs/cifar10.md", "docs/benchmarks.md", "docs/quantizable-blocks.md", "docs/quantization.md",
            "docs/guarantees.md", "docs/api.md", "docs/models.md"} <= links
    assert all((ROOT / link).is_file() for link in links)


def test_generated_tables_have_their_markers_in_docs():
    assert "<!-- bench-table:start -->" in (ROOT / "docs" / "benchmarks.md").read_text()
    assert "<!-- cifar10-table:start -->" in (ROOT / "docs" / "cifar10.md").read_text()


def test_the_models_table_lists_every_registered_model_and_is_current():
    table = (ROOT / "docs" / "models.md").read_text().split("<!-- models-table:start -->")[1].split("<!-- models-")[0]
    assert sorted(re.findall(r"^\| `(\w+)` \|", table, flags=re.M)) == qzoo.list_models()
    families = README.split("## Models", 1)[1].split("\n## ", 1)[0]
    members = {}
    for spec in qzoo.registry.model_specs():
        members.setdefault(spec.family, []).append(spec.name)
    assert all(any(f"`{name}`" in families for name in names) for names in members.values())  # a row per family
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "models_table.py"), "--check"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

def test_readme_docs_and_the_cifar10_tool_name_no_folder_outside_the_repository():
    """A clone has no sibling data folders: the examples fetch data by name or take it as --data."""
    texts = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in (ROOT / "docs").glob("*.md")}}
    helps = {f"tools/cifar10.py {step} --help": subprocess.run(
        [sys.executable, str(ROOT / "tools" / "cifar10.py"), step, "mobilenet_v2", "--help"],
        capture_output=True, text=True, timeout=120, check=True).stdout for step in ("ptq", "train")}
    for where, text in {**texts, **helps}.items():
        assert not re.search(r"\.\./|shared/datasets", text), where
    assert "--data DATA" in helps["tools/cifar10.py ptq --help"] and "torch/cifar10" in helps["tools/cifar10.py ptq --help"]
