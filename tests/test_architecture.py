"""The import graph of meanfield, meanfield.particles and meanfield.validation.

Every module is parsed with ``ast``; every import statement counts, at module level or inside
a function (a lazy import still makes one module depend on another, so it may not close a
cycle either). Rules:

* no cycle between modules;
* meanfield.particles imports nothing of meanfield outside meanfield.particles;
* meanfield (outside validation) never imports meanfield.validation;
* no private name (``_foo``) is imported from another module, here and in tests/ and
  benchmarks/ (private *modules* such as ``meanfield.particles._validate`` are package helpers
  and may be imported; the names taken from them must be public).

Edges go to the module an import names: ``from meanfield.particles import flow`` depends on
``meanfield.particles.flow``; ``import meanfield.particles as pt`` on the package
``meanfield.particles`` (its ``__init__``). A submodule's implicit import of its parent
package is not an edge (every package would otherwise cycle through its own ``__init__``).
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("meanfield", "meanfield.particles", "meanfield.validation")


def module_files(packages: dict[str, pathlib.Path]) -> dict[str, pathlib.Path]:
    """{dotted module name: file} of every module under the given package roots."""
    modules = {}
    for package, root in packages.items():
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path  # nested roots: same name
    return modules


def imports_of(name: str, path: pathlib.Path, is_package: bool) -> list[tuple[str, str | None,
                                                                             int]]:
    """(imported module, imported name or None, line) of every import in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found += [(module, alias.name, node.lineno) for alias in node.names]
    return found


def import_graph(modules: dict[str, pathlib.Path]):
    """(edges {module: {imported module: first line}}, private-name imports)."""
    edges, private = {}, []
    for name, path in modules.items():
        out = edges.setdefault(name, {})
        for module, imported, line in imports_of(name, path, path.name == "__init__.py"):
            if module == "__future__":
                continue
            target = module
            if imported is not None and f"{module}.{imported}" in modules:
                target = f"{module}.{imported}"
            elif imported is not None and imported.startswith("_") and not imported.startswith("__"):
                private.append(f"{path}:{line}: {name} imports {module}.{imported}")
            if target in modules and target != name:
                out.setdefault(target, line)
    return edges, private


def cycles(edges: dict[str, dict]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(edges: dict[str, dict], core: str, engine: str, studies: str) -> list[str]:
    """Arrows that point the wrong way: engine -> core, core (or engine) -> studies."""
    bad = []
    for source, targets in edges.items():
        for target, line in targets.items():
            if _inside(source, engine) and not _inside(target, engine):
                bad.append(f"{source}:{line} -> {target} (engine imports outside itself)")
            if not _inside(source, studies) and _inside(target, studies):
                bad.append(f"{source}:{line} -> {target} (arrow back up to {studies})")
    return bad


def check(packages: dict[str, pathlib.Path], core: str, engine: str, studies: str) -> dict:
    edges, private = import_graph(module_files(packages))
    return {"cycles": cycles(edges), "layers": layer_violations(edges, core, engine, studies),
            "private": private}


def installed_roots() -> dict[str, pathlib.Path]:
    return {p: pathlib.Path(importlib.util.find_spec(p).submodule_search_locations[0])
            for p in PACKAGES}


def test_project_import_graph_is_layered_acyclic_and_public():
    roots = installed_roots()
    modules = module_files(roots)
    assert {"meanfield.runner", "meanfield.particles.integrators",
            "meanfield.validation.sweep"} <= set(modules)  # the walk found the code
    found = check(roots, "meanfield", "meanfield.particles", "meanfield.validation")
    assert found == {"cycles": [], "layers": [], "private": []}, found


def test_tests_and_benchmarks_import_no_private_names():
    roots = installed_roots()
    modules = module_files(roots)
    private = []
    for folder in ("tests", "benchmarks"):
        for path in sorted((ROOT / folder).glob("*.py")):
            for module, imported, line in imports_of(path.stem, path, False):
                if (imported and imported.startswith("_") and not imported.startswith("__")
                        and module != "__future__" and f"{module}.{imported}" not in modules):
                    private.append(f"{path.name}:{line}: {module}.{imported}")
    assert private == []


def _write(root: pathlib.Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


CLEAN = {
    "core/__init__.py": "from core import run\n",
    "core/run.py": "import json\nfrom core.engine import step\nfrom core import setup\n",
    "core/setup.py": "from core.engine.model import Spec\n",
    "core/units.py": "SECOND = 1.0\n",
    "core/engine/__init__.py": "from core.engine.model import Spec\nfrom .model import step\n",
    "core/engine/model.py": "import numpy\nclass Spec: pass\ndef step(): pass\n",
    "core/studies/__init__.py": "import core.units\nfrom core.engine import Spec\n",
}


@pytest.mark.parametrize("planted,kind,expected", [
    ({}, None, None),
    ({"core/setup.py": "from core.engine.model import Spec\n"
                       "def late():\n    from core.run import step\n"},
     "cycles", [["core.run", "core.setup"]]),
    ({"core/engine/model.py": "from core.units import SECOND\n"}, "layers",
     ["core.engine.model:1 -> core.units (engine imports outside itself)"]),
    ({"core/run.py": "def f():\n    import core.studies\n"}, "layers",
     ["core.run:2 -> core.studies (arrow back up to core.studies)"]),
    ({"core/setup.py": "from .engine.model import _hidden\n"}, "private", ["_hidden"]),
])
def test_the_checker_finds_planted_violations(tmp_path, planted, kind, expected):
    """The checker on a tiny synthetic package: clean as written, and each planted violation
    (a lazy import closing a cycle, engine -> core, core -> studies, a private name through a
    relative import) is reported."""
    _write(tmp_path, CLEAN | planted)
    roots = {"core": tmp_path / "core", "core.engine": tmp_path / "core" / "engine",
             "core.studies": tmp_path / "core" / "studies"}
    found = check(roots, "core", "core.engine", "core.studies")
    if kind is None:
        assert found == {"cycles": [], "layers": [], "private": []}, found
        return
    others = {k: v for k, v in found.items() if k != kind}
    assert others == {k: [] for k in others}, found
    if kind == "private":
        assert len(found["private"]) == 1 and expected[0] in found["private"][0]
        assert "core.setup imports core.engine.model._hidden" in found["private"][0]
    else:
        assert found[kind] == expected


def test_validate_is_a_plugin_command(capsys):
    """`meanfield validate` comes from meanfield.validation's entry point; without a study it
    prints the usage and the studies and exits 2; --help documents the default report dir."""
    from importlib import metadata

    from meanfield import cli

    names = {e.name: e.value for e in metadata.entry_points(group=cli.COMMANDS_GROUP)}
    assert names["validate"] == "meanfield.validation.cli:register"
    assert cli.main(["validate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: meanfield validate") and "name a study" in err
    assert "luo-slopes" in err and "wang-ma" in err
    assert cli.main(["validate", "--help"]) == 0  # argparse's exit, as a status
    assert "./validation-reports/STUDY" in capsys.readouterr().out.replace("\n", " ")


@pytest.mark.parametrize("argv, status, plugins", [(["--help"], 0, True),
                                                   (["run", "--help"], 0, False),
                                                   (["no-such-command"], 2, True)])
def test_help_and_usage_errors_import_no_heavy_module(argv, status, plugins):
    """Building the parser (plugins included) imports neither jax nor xarray; a built-in
    command does not even load the plugins."""
    import subprocess
    import sys

    heavy = ["jax", "xarray", "zarr", "numpy", "meanfield.validation.executors"]
    code = ("import contextlib, io, sys; from meanfield import cli; out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):\n"
            f"    status = cli.main({argv!r})\n"
            f"print(status, 'validate' in out.getvalue(), [m for m in {heavy!r} if m in sys.modules],"
            " 'meanfield.validation' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == f"{status} {plugins} [] {plugins}"
