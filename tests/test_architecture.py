"""The import rules of the layout (DESIGN): the harness (eval/) never imports a method package (live2diff/,
baselines/); methods may use the harness's shared pieces (weights loader, depth wrapper), never the other way."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

METHOD_PACKAGES = ("live2diff", "baselines")


def imported_modules(path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (  # importlib.import_module("live2diff....") with a literal name
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


@pytest.mark.parametrize("package", METHOD_PACKAGES)
def test_eval_never_imports_a_method_package(package):
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.split(".")[0] == package)
        for p in sorted((ROOT / "eval").rglob("*.py"))
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"eval/ imports {package}/: {offenders}"


def test_the_check_sees_imports(tmp_path):
    """The scan finds plain, from- and importlib imports (a scan that finds nothing would pass vacuously)."""
    p = tmp_path / "m.py"
    p.write_text(
        "import live2diff.kv_cache\nfrom baselines.common import x\n"
        "def f():\n    import importlib\n    importlib.import_module('live2diff.method')\n"
    )
    assert imported_modules(p) >= {"live2diff.kv_cache", "baselines.common", "live2diff.method"}
