"""The package's layout as a checked contract (issue #16): the import-linter contracts in
pyproject.toml hold, an import pointing up a layer breaks them, no two modules import each
other, and every stage module keeps the stage contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import grimp
import pytest

from evalpipe.stages.contract import REQUIRED, breaches
from evalpipe.stages.pipeline import STAGE_NAMES, Stage

REPO = Path(__file__).resolve().parent.parent


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess:
    """lint-imports with pyproject.toml's contracts, on the evalpipe package in
    `package_parent`."""
    env = dict(os.environ, PYTHONPATH=str(package_parent))
    command = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run([sys.executable, "-c", command, "--no-cache", "--no-logo",
                           str(REPO / "pyproject.toml")],
                          cwd=package_parent, env=env, capture_output=True, text=True)


def test_the_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " kept, 0 broken." in result.stdout and "BROKEN" not in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    # a foundation module importing a stage: an arrow pointing up
    ("errors.py", "from evalpipe.stages import pipeline", "evalpipe's layers"),
    # a domain package importing the comparison above it
    ("stats/paired.py", "from evalpipe.compare import command", "evalpipe's layers"),
    # one stage importing another
    ("stages/generate.py", "from evalpipe.stages import prepare", "stages never import"),
])
def test_an_import_against_the_layers_breaks_the_contract(tmp_path, module, line, broken):
    shutil.copytree(REPO / "evalpipe", tmp_path / "evalpipe",
                    ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "evalpipe" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout


def test_no_two_modules_import_each_other():
    graph = grimp.build_graph("evalpipe")
    both_ways = sorted(
        (a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
        if a < b and a in graph.find_modules_directly_imported_by(b))
    assert both_ways == []


def test_every_stage_keeps_the_stage_contract():
    for name in STAGE_NAMES:
        assert breaches(Stage(name).module) == [], name


def test_a_module_without_outputs_breaks_the_contract(monkeypatch):
    functions = {name: (lambda *args: None) for name in REQUIRED if name != "outputs"}
    stand_in = types.ModuleType("evalpipe.stages.prepare", "no outputs")
    stand_in.__dict__.update(functions)
    assert breaches(stand_in) == ["outputs"]
    monkeypatch.setitem(sys.modules, "evalpipe.stages.prepare", stand_in)
    with pytest.raises(TypeError, match=r"^evalpipe\.stages\.prepare breaks the stage contract "
                                        r"\(evalpipe/stages/contract\.py\): no outputs$"):
        Stage("prepare").module
