"""Dependency direction (STYLE.md section 1): a module imports only from its left,
units -> config -> model -> engines/data -> monitors -> energy -> io -> experiment -> cli,
and the model and config layers load neither torch nor brian2."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pcsim"

RANK = {
    "units": 0, "config": 1, "model": 2, "engines": 3, "data": 3, "augment": 3.5, "monitors": 4,
    "energy": 5, "runio": 6, "plots": 6, "parallel": 6, "runfolder": 6.5, "training": 6.5,
    "evaluation": 6.5, "experiment": 7, "online": 7.5, "cli": 8, "__main__": 9,
    "__init__": 9,
}


def _unit(module_path: Path) -> str:
    rel = module_path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_every_import_points_left():
    """An import from a layer to the right is a cycle in waiting (brian2's
    codegen/generators/base.py patched cycles with imports inside functions)."""
    violations = []
    for path in PACKAGE.rglob("*.py"):
        unit = _unit(path)
        assert unit in RANK, f"{path}: add its layer to RANK"
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] != "pcsim" or len(parts) < 2:
                continue
            if RANK[parts[1]] > RANK[unit]:
                violations.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not violations, violations


def test_only_engines_and_data_import_torch_and_brian2():
    """Backends are imported by engines (and data, for torchvision) only."""
    allowed = {"engines", "data", "augment", "experiment", "cli", "__init__", "monitors", "energy",
               "plots", "runio", "__main__", "parallel", "runfolder", "training",
               "evaluation", "online"}
    for path in PACKAGE.rglob("*.py"):
        heavy = {m.split(".")[0] for m in _imports(path)} & {"torch", "brian2", "torchvision"}
        if heavy:
            assert _unit(path) in allowed, f"{path} imports {heavy}"
        if "brian2" in heavy:
            assert "brian2" in path.parts, f"{path}: brian2 only under engines/brian2"


def test_model_and_config_load_no_backend():
    code = ("import sys, pcsim, pcsim.model, pcsim.config; "
            "bad = {'torch', 'brian2', 'torchvision'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
