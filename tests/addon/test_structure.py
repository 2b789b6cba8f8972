"""The add-on's structure: its core runs without Blender and imports nothing outside itself (import cycles: see
tests/test_structure.py, for the add-on and the backend together)."""
import json
import pathlib
import subprocess
import sys

from tests.test_structure import import_graph

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


def test_core_imports_nothing_outside_core():
    graph = import_graph()
    assert "mirage_blender.core.light" in graph and graph["mirage_blender.core.light"]  # the graph sees imports
    for name in CORE:
        outside = {m for m in graph[f"mirage_blender.core.{name}"] if not m.startswith("mirage_blender.core")}
        assert not outside, f"core.{name} imports {sorted(outside)}"
