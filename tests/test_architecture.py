"""The import rules of the layout (DESIGN): the harness (eval/) never imports a method package (live2diff/,
baselines/); the model side imports only the harness's neutral modules (the method interface, the weights loader,
the DPT wrapper, the config paths), never a metric, the runner or a dataset; the runtime model never imports its
tools (the training script, the test fixtures); and no import circle exists among the project's modules (lazy
imports inside functions count: a circle through a function-level import is still two modules that cannot be
understood apart)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("eval", "live2diff", "baselines")
METHOD_PACKAGES = ("live2diff", "baselines")

#: harness modules the model side may import: they hold no harness logic, only what both sides share
NEUTRAL = {
    "eval.interface": "the StreamMethod protocol and Emission every method implements",
    "eval.weights": "the one weight-file loader (paths, safetensors / weights_only pickles)",
    "eval.depth": "the DPT wrapper shared by the depth_error metric and Live2Diff's depth branch",
    "eval.paths": "where conf/ is, in a checkout or an installed wheel",
}

#: the model side's tools — the training script and the test fixtures / differential cases, never imported by the
#: runtime model (test_the_model_never_imports_its_tools) — train on and test with the benchmark's own synthetic
#: clips, and the decoder trains with its LPIPS network: the only other harness imports of the model side, per tool
#: package. Each entry must still be needed (a stale allowance fails too).
TOOLS = {
    "live2diff.train_tiny": {"eval.datasets.synthetic", "eval.metrics.lpips_metric"},
    "live2diff.testing": {"eval.datasets.synthetic"},
}


def _tool(mod: str) -> str | None:
    return next((t for t in TOOLS if mod == t or mod.startswith(t + ".")), None)


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


def project_modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted name -> file of every module of ``packages`` under ``root`` (a package is its ``__init__``)."""
    mods = {}
    for pkg in packages:
        for p in sorted((root / pkg).rglob("*.py")):
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    return mods


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in the file (top level or inside a function).

    ``from pkg import sub`` is an edge to ``pkg.sub`` when ``sub`` is a module (Python imports ``pkg`` first, but a
    package's ``__init__`` importing its submodules is not a circle), else to ``pkg``; relative imports resolve
    against the importing module; ``importlib.import_module("x.y")`` with a literal name counts as ``import x.y``."""
    mods = project_modules(root, packages)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        targets: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets += [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                targets.append(node.args[0].value)
        graph[mod] = {r for t in targets if t.split(".")[0] in packages and (r := resolve(t)) and r != mod}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


@pytest.mark.parametrize("package", METHOD_PACKAGES)
def test_eval_never_imports_a_method_package(package):
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.split(".")[0] == package)
        for p in sorted((ROOT / "eval").rglob("*.py"))
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"eval/ imports {package}/: {offenders}"


def test_no_import_circle_among_the_project_modules(graph):
    found = circles(graph)
    detail = {
        " <-> ".join(c): {m: sorted(graph[m] & set(c)) for m in c} for c in found
    }  # who imports whom inside each circle
    assert not found, f"import circles (move the shared piece to a module both can import): {detail}"


def test_the_model_side_imports_only_the_neutral_harness_modules(graph):
    offenders, used = {}, set()
    for mod, targets in sorted(graph.items()):
        if mod.split(".")[0] not in METHOD_PACKAGES:
            continue
        harness = {t for t in targets if t.split(".")[0] == "eval"}
        tool = _tool(mod)
        allowed = TOOLS.get(tool, set()) if tool else set()
        used |= {(tool, t) for t in harness & allowed}
        bad = sorted(harness - set(NEUTRAL) - allowed)
        if bad:
            offenders[mod] = bad
    assert not offenders, (
        f"model-side modules import harness modules other than the neutral ones {sorted(NEUTRAL)}: {offenders}"
    )
    stale = {(tool, t) for tool, ts in TOOLS.items() for t in ts} - used
    assert not stale, f"TOOLS allows imports that no module makes any more: {sorted(stale)}"


def test_the_model_never_imports_its_tools(graph):
    """The builder reads trained weights through live2diff.components.trained, not the training script; nothing
    but a tool's own modules (and tests, benchmarks) imports a tool."""
    offenders = {
        mod: sorted(t for t in targets if _tool(t) and _tool(t) != _tool(mod))
        for mod, targets in graph.items()
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"project modules import the model side's tools {sorted(TOOLS)}: {offenders}"


def test_the_check_sees_imports(tmp_path):
    """The scan finds plain, from- and importlib imports (a scan that finds nothing would pass vacuously)."""
    p = tmp_path / "m.py"
    p.write_text(
        "import live2diff.kv_cache\nfrom baselines.common import x\n"
        "def f():\n    import importlib\n    importlib.import_module('live2diff.method')\n"
    )
    assert imported_modules(p) >= {"live2diff.kv_cache", "baselines.common", "live2diff.method"}


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_graph_finds_a_circle_through_a_lazy_or_relative_import(tmp_path):
    """A circle closed by a function-level import or a relative import is found; a package ``__init__`` that
    imports its submodules, which import each other one way, is not a circle."""
    _package(
        tmp_path,
        {
            "eval/__init__.py": "",
            "eval/a.py": "from eval import b\n",
            "eval/b.py": "def f():\n    from eval.a import g\n",
            "eval/pkg/__init__.py": "from eval.pkg.x import X\nfrom eval.pkg import y\n",
            "eval/pkg/x.py": "from eval.pkg import y\n",
            "eval/pkg/y.py": "from . import z\n",
            "eval/pkg/z.py": "from .y import q\n",
        },
    )
    g = import_graph(tmp_path, ("eval",))
    assert g["eval.a"] == {"eval.b"} and g["eval.b"] == {"eval.a"}
    assert g["eval.pkg.y"] == {"eval.pkg.z"} and g["eval.pkg.z"] == {"eval.pkg.y"}
    assert circles(g) == [["eval.a", "eval.b"], ["eval.pkg.y", "eval.pkg.z"]]
    (tmp_path / "eval/b.py").write_text("def f():\n    pass\n")
    (tmp_path / "eval/pkg/z.py").write_text("q = 1\n")
    assert circles(import_graph(tmp_path, ("eval",))) == []
