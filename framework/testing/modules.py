"""Contract check for a plugin module: public imports only, and a light registration."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


from lungseg.testing._util import _fail

#: What registering a plugin must not import (see :func:`check_plugin_module`).
HEAVY_MODULES = ("torch", "torchvision", "pytorch_lightning", "lightning")

_REGISTER_ALONE = """
import importlib, json, sys
from lungseg.core.manager import load_registry
from lungseg.core.registry import KINDS
registry = load_registry((importlib.import_module(sys.argv[1]),), entry_points=False)
entries = [f"{k} {e.name}({e.signature()})" for k in KINDS for e in registry.entries(k)]
print(json.dumps({"entries": entries, "broken": registry.broken, "modules": sorted(sys.modules)}))
"""


def check_plugin_module(
    module: str, *, heavy: tuple[str, ...] = HEAVY_MODULES, timeout: float = 120.0
) -> None:
    """Check a plugin module: only lungseg's public API imported, and a light registration.

    Reads the source of ``module`` and of the private modules of its own package it imports
    (without running them): an import of a lungseg module other than ``lungseg`` and
    ``lungseg.api``, or of a name they do not export, fails. Then, in a fresh interpreter
    with this one's ``sys.path``, imports ``module`` alone, runs its hooks into an empty
    registry and reads every factory's signature (what ``lungseg plugins`` does): it must
    register something, break nothing, and have imported none of ``heavy``.

    Args:
        module: the plugin's import name, as in its entry point (``my_package.plugin``).
        heavy: top-level packages registration must not import.
        timeout: seconds for the fresh interpreter.
    """
    _check_imports(module, set(), None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-c", _REGISTER_ALONE, module],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if done.returncode != 0:
        _fail(f"registering {module} alone failed: {done.stderr.strip().splitlines()[-1:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["broken"]:
        _fail(f"registering {module} broke it: {report['broken']}")
    if not report["entries"]:
        _fail(f"{module} registered no component")
    loaded = sorted({m.split(".")[0] for m in report["modules"]} & set(heavy))
    if loaded:
        _fail(
            f"registering {module} imported {', '.join(loaded)}; import heavy dependencies "
            "inside the factories (or a module they import when called), not at module level"
        )


def _check_imports(name: str, seen: set[str], own: str | None) -> None:
    """Fail on an import of lungseg's internals in ``name`` or its own private modules."""
    import lungseg
    from lungseg import api

    if name in seen:
        return
    seen.add(name)
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        _fail(f"cannot find the Python source of {name}")
    package = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
    own = own or package
    public = {"lungseg": {*lungseg.__all__, "api"}, "lungseg.api": {*api.__all__, "*"}}
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"), spec.origin)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            target = importlib.util.resolve_name(base, package) if node.level else base
            targets = [(target, tuple(alias.name for alias in node.names))]
        else:
            continue
        for target, names in targets:
            where = f"{spec.origin}:{node.lineno}"
            for private in _own_modules(target, names, own, where):
                _check_imports(private, seen, own)
            bad = [n for n in names if target in public and n not in public[target]]
            if bad:
                _fail(f"{where}: {target} exports no {', '.join(bad)} (see lungseg.api)")


def _own_modules(target: str, names: tuple[str, ...], own: str, where: str) -> list[str]:
    """The plugin's own modules an import names (to check too); fails on lungseg internals."""
    top = own.split(".")[0]
    if target in ("lungseg", "lungseg.api") or target.split(".")[0] not in ("lungseg", top):
        return []  # the public API, or another distribution
    if not target.startswith("lungseg.") and top != "lungseg":
        found = [target]  # the plugin package's own code, under its own name
        found += [f"{target}.{n}" for n in names if _is_module(f"{target}.{n}")]
        return found
    if target == own and names and all(n.startswith("_") for n in names):
        return [f"{own}.{n}" for n in names]  # from lungseg.plugins import _private
    parent, _, leaf = target.rpartition(".")
    if parent == own and leaf.startswith("_"):
        return [target]
    _fail(
        f"{where}: imports {target}{' ' + ', '.join(names) if names else ''}, which is not "
        "lungseg's public API; import from lungseg or lungseg.api"
    )
    return []


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
