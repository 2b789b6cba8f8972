"""The add-on's structure: its core runs without Blender and imports nothing outside itself but the corridor's
channels module (stdlib only, shared with the backend: the one value for a camera's per-pixel maps). Import
cycles: see tests/test_structure.py, for the add-on and the backend together."""
import json
import pathlib
import subprocess
import sys

from tests.test_structure import import_graph

ADDON = pathlib.Path(__file__).resolve().parents[2] / "mirage_blender"
CORE = sorted(p.stem for p in (ADDON / "core").glob("*.py") if p.stem != "__init__")

# Imports the core's modules as the add-on package lays them out (the backend's corridor beside them, as in the
# zip) but without the add-on's own modules, with bpy, mathutils and bpy_extras unavailable, and reports every
# module that got loaded.
GUARDED_IMPORT = """
import json, sys, types
for name in ("bpy", "mathutils", "bpy_extras"):
    sys.modules[name] = None  # `import bpy` now raises ImportError
before = set(sys.modules)
pkg = types.ModuleType("addon")
pkg.__path__ = [sys.argv[1], sys.argv[3]]
sys.modules["addon"] = pkg
import importlib
for name in json.loads(sys.argv[2]):
    importlib.import_module("addon.core." + name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""
# what the core may import beside itself: the corridor's stdlib-only module of per-pixel channels
CORRIDOR = {"backend", "backend.channels"}


def test_core_imports_without_bpy_and_loads_only_numpy_and_the_stdlib():
    assert {"camera", "raster", "lamps", "shadows", "light", "albedo", "frame"} <= set(CORE)
    proc = subprocess.run([sys.executable, "-c", GUARDED_IMPORT, str(ADDON), json.dumps(CORE), str(ADDON.parent)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(json.loads(proc.stdout))
    assert "addon.core.frame" in loaded
    ours = {n[len("addon."):] for n in loaded if n.startswith("addon.")}
    assert {n for n in ours if not n.startswith("core")} <= CORRIDOR, sorted(ours)
    # numpy's compiled parts register cython_runtime; names with a leading underscore are the interpreter's
    tops = {n.split(".")[0] for n in loaded}
    allowed = set(sys.stdlib_module_names) | {"addon", "numpy", "cython_runtime"}
    foreign = {n for n in tops - allowed if not n.startswith("_")}
    assert not foreign, f"the core loaded {sorted(foreign)}"


def test_core_imports_nothing_outside_core():
    graph = import_graph()
    assert "mirage_blender.core.light" in graph and graph["mirage_blender.core.light"]  # the graph sees imports
    for name in CORE:
        outside = {m for m in graph[f"mirage_blender.core.{name}"] if not m.startswith("mirage_blender.core")}
        assert outside <= CORRIDOR, f"core.{name} imports {sorted(outside)}"
