"""The add-on's structure: its core runs without Blender, and its modules import each other without cycles."""
import ast
import json
import pathlib
import subprocess
import sys

ADDON = pathlib.Path(__file__).resolve().parents[2] / "mirage_blender"
CORE = sorted(p.stem for p in (ADDON / "core").glob("*.py") if p.stem != "__init__")

# Imports the core's modules as a package of its own, with bpy, mathutils and bpy_extras unavailable, and
# reports every module that got loaded.
GUARDED_IMPORT = """
import json, sys
for name in ("bpy", "mathutils", "bpy_extras"):
    sys.modules[name] = None  # `import bpy` now raises ImportError
before = set(sys.modules)
sys.path.insert(0, sys.argv[1])
import importlib
for name in json.loads(sys.argv[2]):
    importlib.import_module("core." + name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_core_imports_without_bpy_and_loads_only_numpy_and_the_stdlib():
    assert {"camera", "raster", "lamps", "shadows", "light", "albedo", "frame"} <= set(CORE)
    proc = subprocess.run([sys.executable, "-c", GUARDED_IMPORT, str(ADDON), json.dumps(CORE)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = {name.split(".")[0] for name in json.loads(proc.stdout)}
    assert "core" in loaded
    # numpy's compiled parts register cython_runtime; names with a leading underscore are the interpreter's
    allowed = set(sys.stdlib_module_names) | {"core", "numpy", "cython_runtime"}
    foreign = {n for n in loaded - allowed if not n.startswith("_")}
    assert not foreign, f"the core loaded {sorted(foreign)}"


def _imports(path, package):
    """Modules of the add-on that `path` (module `package`.stem) imports, at any depth of the file
    (imports inside functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = package.split(".") if package else []
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - node.level + 1] if node.level > 1 else here
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module:  # `from . import x` needs x, not the package that is importing it
                out.add(target)
            out.update(f"{target}.{a.name}" if target else a.name for a in node.names)
    return out


def _graph():
    modules = {}
    for path in ADDON.rglob("*.py"):
        rel = path.relative_to(ADDON).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        package = ".".join(parts if path.stem == "__init__" else parts[:-1])
        modules[name] = (path, package)
    return {name: {m for m in _imports(path, package) if m in modules and m != name}
            for name, (path, package) in modules.items()}


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, trail + [nxt])):
                return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_no_import_cycles_inside_the_addon():
    graph = _graph()
    assert {"session", "job", "core.raster", "gather.frames"} <= set(graph)
    assert "job" in graph["session"] and "core.frame" in graph["gather.frames"]  # the graph sees the imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_finder_finds_a_lazy_import_cycle():
    # the check above must be able to fail: a cycle closed by an import inside a function
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    lazy = ast.parse("def f():\n    from . import session\n")
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(lazy))


def test_core_imports_nothing_outside_core():
    graph = _graph()
    for name in CORE:
        outside = {m for m in graph[f"core.{name}"] if not m.startswith("core")}
        assert not outside, f"core.{name} imports {sorted(outside)}"
