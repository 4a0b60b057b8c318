"""The package layout: stage sub-packages import downwards only, and no module imports cycle.

Only module-level imports count (an import inside a function, or under ``TYPE_CHECKING``, runs
late or never, which is how the composition root reaches the stages it builds).
"""

from __future__ import annotations

import ast
from pathlib import Path

import lungseg
import lungseg.plugins

#: Each layer may import its own and lower layers at module level, never higher ones.
LAYERS = {
    "lungseg.core": 0,
    "lungseg.data": 1,
    "lungseg.store": 1,
    "lungseg.preprocess": 2,
    "lungseg.training": 3,
    "lungseg.inference": 4,
    "lungseg.plugins": 5,
    "lungseg.testing": 5,
    "lungseg.api": 5,  # the plugin authors' facade: plugins import it
    "lungseg": 6,  # cli, pipeline, api, the package itself
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in (lungseg, lungseg.plugins):
        base = Path(package.__file__).parent
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [package.__name__, *(p for p in rel.parts if p != "__init__")]
            if package is lungseg and rel.parts[0] == "plugins":
                continue  # an installed layout may nest the plugins folder
            found[".".join(parts)] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    out: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in out if name in known}


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, set(modules)) - {m} for m, p in modules.items()}


def test_stage_packages_import_downwards_only():
    upward = [
        f"{m} imports {d}"
        for m, deps in _graph().items()
        for d in deps
        if _layer(d) > _layer(m) and d != "lungseg"
    ]
    assert not upward, upward


def test_no_module_level_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                raise AssertionError(" -> ".join([*path[path.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert len(graph) > 30  # the walk saw the whole package
