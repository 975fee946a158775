# SPDX-License-Identifier: Apache-2.0
"""The package's layering (DESIGN.md "Layout"): no import circles, each stage uses only
the core and the stages below it. Read from the source with ast, lazy imports included."""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

from torcx_testing import modules_loaded

PACKAGE = Path(__file__).resolve().parents[2] / "torcx"

# What each stage may import besides itself and the core (torcx/*.py).
ALLOWED = {
    "core": set(),
    "image": set(),
    "apply": set(),
    "remote": set(),
    "boot": {"apply"},
    "cli": {"apply", "boot", "image", "remote"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every torcx module ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "torcx")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "torcx":
                continue
            for alias in node.names:  # "from . import x" may name a module
                if _exists(f"{mod}.{alias.name}"):
                    found.add(f"{mod}.{alias.name}")
                else:
                    found.add(mod)
    found.discard(name)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _stage(module: str) -> str:
    if module == "torcx.__main__":
        return "cli"  # python -m torcx: the command line
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else "core"


def test_no_import_circle():
    """No module reaches itself through its imports (module-level or inside functions)."""
    graph = _graph()
    state: dict[str, int] = {}
    circles = []

    def visit(module, trail):
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if dep == "torcx" or dep not in graph:
                continue  # the package's own lazy re-exports of the engine
            if state.get(dep) == 1:
                circles.append(trail[trail.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, trail + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_stages_use_only_the_core_and_the_stages_below():
    """core < image, apply, remote < boot < cli: nothing imports a stage above its own."""
    bad = []
    for module, deps in _graph().items():
        stage = _stage(module)
        for dep in deps:
            other = _stage(dep)
            if dep == "torcx" or other == stage or other == "core" and stage != "core":
                continue
            if other not in ALLOWED[stage]:
                bad.append(f"{module} ({stage}) imports {dep} ({other})")
    assert not bad, "\n".join(sorted(bad))


# The registry client and what it pulls in: only torcx.remote.oci may import them.
REGISTRY_CLIENT = {"oras", "requests", "urllib3", "jsonschema"}


def test_registry_client_only_in_remote_oci():
    """Only torcx/remote/oci.py imports the OCI registry client (never the boot path)."""
    users = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and not node.level else [])
            if any(n.split(".")[0] in REGISTRY_CLIENT for n in names):
                users.append(_module_name(path))
    assert sorted(set(users)) == ["torcx.remote.oci"]


def test_boot_path_imports_no_registry_client(tmp_path):
    """`torcx apply` and `torcx-generator` load neither the registry client nor remotes."""
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").write_text("ID=flatcar\nVERSION_ID=1\n")
    root = str(tmp_path)
    runs = [modules_loaded(
        f"from torcx.cli import main; main(['--root', {root!r}, 'apply', '--dry-run', "
        "'--no-mount'])")]
    if os.geteuid() == 0 and shutil.which("unshare"):  # the generator mounts: private namespace
        runs.append(modules_loaded(
            f"from torcx.cli import main; main(['--root', {root!r}, 'a', 'b', 'c'], "
            "prog='torcx-generator')", "unshare", "--mount", "--propagation", "private"))
    for modules in runs:
        assert any(m.startswith(("torcx.apply", "torcx.boot")) for m in modules), modules
        bad = sorted(m for m in modules if m.split(".")[0] in REGISTRY_CLIENT
                     or m.startswith("torcx.remote"))
        assert not bad, bad
