"""The library's layers hold: imports flow one way (util <- data <- core <- methods <- study <- experiments <- cli),
function-level imports included; no module is over 600 lines; the public face the README teaches imports."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import histolean

PACKAGE = Path(histolean.__file__).resolve().parent
LAYERS = ("util", "data", "core", "methods", "study", "experiments", "cli")   # each may import the ones before it
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module under lib/histolean (a package by its __init__)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The library modules ``node`` imports (the longest known prefix of each name)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [f"{base}.{alias.name}" for alias in node.names]
    found = []
    for name in names:
        while name and name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in MODULES:
            found.append(name)
    return found


def _imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    return {target for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            for target in _imported(module, node) if target != module}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_has_a_layer():
    # the top-level __init__ (the lazy public face) is the one module above the layers
    assert [m for m in MODULES if _layer(m) is None] == ["histolean"]


def test_no_module_imports_a_higher_layer():
    upward = []
    for module in MODULES:
        if module == "histolean":
            continue
        for target in sorted(_imports(module)):
            if target == "histolean":
                upward.append(f"{module} -> histolean (the lazy public face: import by the real path)")
            elif _layer(target) > _layer(module):
                upward.append(f"{module} ({LAYERS[_layer(module)]}) -> {target} ({LAYERS[_layer(target)]})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_check_sees_function_level_and_relative_imports():
    source = "def f():\n    from histolean.study import records\n    from ..core import flops\n"
    tree = ast.parse(source)
    found = {t for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             for t in _imported("histolean.methods.nar", node)}
    assert found == {"histolean.study.records", "histolean.core.flops"}
    assert _layer("histolean.study.records") > _layer("histolean.methods.nar")


def test_no_module_is_over_600_lines():
    lines = {m: len(path.read_text(encoding="utf-8").splitlines()) for m, path in MODULES.items()}
    long = {m: n for m, n in lines.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_public_face_imports():
    from histolean import arch, data, flops, metrics, models, nar, pruning, resrep, streaming, train, wsi

    public = {"arch": arch, "models": models, "flops": flops, "nar": nar, "resrep": resrep, "pruning": pruning,
              "streaming": streaming, "train": train, "metrics": metrics, "wsi": wsi, "data": data}
    assert set(public) == set(histolean.PUBLIC_MODULES)
    for name, module in public.items():
        assert module is importlib.import_module(histolean.PUBLIC_MODULES[name]), name
    with pytest.raises(AttributeError, match="no attribute 'bench'"):
        histolean.bench   # noqa: B018  (old aliases are gone)
