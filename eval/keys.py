"""What a unit's numbers depend on, turned into hashes: file and folder contents, weights, and code versions.

A cache hit must never be a different unit, so keys are built from *content*, not from names, sizes or
modification times. Hashing a file reads it once; the digest is remembered per file *and* its stat signature
(path, inode, size, mtime, ctime), in this process and in a small on-disk cache (``$LIVE2DIFF_BENCH_CACHE`` or
``~/.cache/live2diff-bench/digests``), so multi-GB weights are read once, not on every run. ``ctime`` cannot be set
by a user, so an in-place edit that restores the old mtime (``touch -r``) still changes the signature; a
``cp -rp`` copy has a new path and inode.

Code versions: a method's numbers depend on the project code it runs. :func:`code_digest` follows the imports of
a config's ``_target_`` module (statically, through every ``import`` in each file, lazy ones included) through all
modules that live outside the Python installation (this project, a user's own package) and hashes their sources;
third-party packages it reaches count with their installed version.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import Any

from eval.weights import local_path

CHUNK = 1 << 20
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".onnx", ".npz", ".pkl")

_memo: dict[tuple, str] = {}


def _cache_dir() -> Path:
    env = os.environ.get("LIVE2DIFF_BENCH_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "live2diff-bench"
    return base / "digests"


def _signature(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised by its stat signature, see the module doc)."""
    path = Path(path)
    sig = _signature(path)
    if sig in _memo:
        return _memo[sig]
    sig_hash = hashlib.sha256(json.dumps(sig).encode()).hexdigest()
    cached = _cache_dir() / sig_hash[:2] / sig_hash
    try:
        digest = cached.read_text().strip()
        if len(digest) == 64:
            _memo[sig] = digest
            return digest
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    _memo[sig] = digest
    try:  # the on-disk cache is an optimisation only: a read-only home must not stop a run
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, cached)
    except OSError:
        pass
    return digest


def tree_digest(path: str | Path, files: list[Path] | None = None) -> str:
    """Digest of a folder: its files' paths relative to it and their contents (``files`` restricts the set)."""
    root = Path(path)
    if files is None:
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    h = hashlib.sha256()
    for f in files:
        h.update(json.dumps([str(Path(f).relative_to(root)), file_digest(f)]).encode())
    return h.hexdigest()


def path_digest(path: str | Path) -> str:
    p = Path(path).expanduser()
    return tree_digest(p) if p.is_dir() else file_digest(p)


def weights_digests(cfg: Any, prefix: str = "") -> dict[str, str]:
    """``{key.path: digest}`` for every existing local file or folder a config names as weights.

    A value counts as weights when its key mentions ``weight`` (``model.weights.base``, ``raft_weights``) or it
    ends like a checkpoint (``.safetensors``, ``.ckpt``, ...). Paths that do not exist are left to the loaders
    (and to eval/validate.py), which name them with the key to set.
    """
    out: dict[str, str] = {}
    if isinstance(cfg, dict):
        items = cfg.items()
    elif isinstance(cfg, list | tuple):
        items = enumerate(cfg)
    else:
        return out
    for k, v in items:
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict | list | tuple):
            out.update(weights_digests(v, key))
        elif isinstance(v, str) and v and ("weight" in key.lower() or v.lower().endswith(WEIGHT_SUFFIXES)):
            p = local_path(v)
            if p.exists():
                out[key] = path_digest(p)
    return out


# -- code versions --------------------------------------------------------------------------------------------
def _installed_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            roots.add(sysconfig.get_paths()[name])
        except KeyError:
            pass
    return tuple(str(Path(r).resolve()) for r in roots if r)


@lru_cache(maxsize=4096)
def _is_installed(origin: str) -> bool:
    o = str(Path(origin).resolve())
    return any(o.startswith(r + os.sep) or o == r for r in _installed_roots())


@lru_cache(maxsize=4096)
def _spec_origin(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    return spec.origin


@lru_cache(maxsize=4096)
def _local_file(top_origin: str, name: str) -> str | None:
    """The source file of ``name`` inside a local top-level package, found without importing anything."""
    top = Path(top_origin)
    parts = name.split(".")[1:]
    if not parts:
        return str(top) if top.suffix == ".py" else None
    if top.name != "__init__.py":
        return None  # a plain module has no submodules
    base = top.parent.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return str(cand)
    return None


def _imports(path: Path, module: str, is_package: bool) -> set[str]:
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return set()
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod:
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)  # submodules imported by name
    # parent packages run their __init__ too
    for name in list(out):
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


@lru_cache(maxsize=1)
def _distributions() -> dict:
    from importlib import metadata

    return metadata.packages_distributions()


def _dist_version(top: str) -> str | None:
    from importlib import metadata

    try:
        dists = _distributions().get(top)
        if dists:
            return metadata.version(dists[0])
    except Exception:  # noqa: BLE001 - metadata is best effort
        pass
    mod = sys.modules.get(top)
    return str(getattr(mod, "__version__", "")) or None


@lru_cache(maxsize=4096)
def _source_info(origin: str, module: str) -> tuple[str, tuple[str, ...]]:
    """A local module's source digest and the modules it imports, read and parsed once per process (the import
    closures of a run's targets overlap: without this a cached re-run spent seconds parsing the same files)."""
    path = Path(origin)
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), tuple(sorted(_imports(path, module, path.name == "__init__.py")))


@lru_cache(maxsize=256)
def _module_digest(module: str) -> str:
    seen: dict[str, str] = {}
    third_party: dict[str, str | None] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        top = name.split(".")[0]
        top_origin = _spec_origin(top)  # a top-level look-up imports nothing
        if top in sys.stdlib_module_names:
            continue
        if top_origin is None or _is_installed(top_origin):
            if top_origin is not None and top not in third_party:
                third_party[top] = _dist_version(top)
            continue
        origin = _local_file(top_origin, name)
        if origin is None:
            continue
        seen[name], imports = _source_info(origin, name)
        todo.extend(imports)
    blob = json.dumps({"sources": seen, "packages": third_party}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def code_digest(target: str) -> str:
    """Version of the code a ``_target_`` (``pkg.module.Class``) runs: its local import closure's sources and the
    versions of the third-party packages it imports (remembered for the process: modules are not reloaded)."""
    top_origin = _spec_origin(target.split(".")[0])
    module = target
    if top_origin is not None and not _is_installed(top_origin):
        while module and _local_file(top_origin, module) is None:
            module = module.rpartition(".")[0]
    else:
        while module and _spec_origin(module) is None:
            module = module.rpartition(".")[0]
    if not module:
        return "unresolved:" + target
    return _module_digest(module)


def clear_caches() -> None:
    """Forget remembered digests (tests that edit files in place within one process)."""
    _memo.clear()
    _module_digest.cache_clear()
    _source_info.cache_clear()
    _spec_origin.cache_clear()
    _is_installed.cache_clear()
    _local_file.cache_clear()


def config_code_digests(cfg: Any) -> dict[str, str]:
    """``{_target_: code digest}`` for every ``_target_`` in a (resolved) config."""
    out: dict[str, str] = {}
    if isinstance(cfg, dict):
        t = cfg.get("_target_")
        if isinstance(t, str):
            out[t] = code_digest(t)
        for v in cfg.values():
            out.update(config_code_digests(v))
    elif isinstance(cfg, list | tuple):
        for v in cfg:
            out.update(config_code_digests(v))
    return out


STREAM_DRIVER = ("eval.timing", "eval.live")  # the code between a method and its recorded outputs and timings


def stream_identity(method_cfg: Any) -> dict:
    """The parts of a unit key a method contributes: config, weights digests, code versions."""
    return {
        "method": method_cfg,
        "weights": weights_digests(method_cfg),
        "code": {**config_code_digests(method_cfg), **{m: code_digest(m) for m in STREAM_DRIVER}},
    }


def metrics_identity(metrics_cfg: Any) -> dict:
    """The parts of a unit key the metrics contribute: config, weights digests, code versions."""
    return {
        "metrics": metrics_cfg,
        "metrics_weights": weights_digests(metrics_cfg),
        "metrics_code": config_code_digests(metrics_cfg),
    }
