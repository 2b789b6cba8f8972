"""The add-on's bpy-side modules without its package ``__init__`` (which registers UI classes)."""
import importlib
import pathlib
import sys
import types

_DIR = pathlib.Path(__file__).resolve().parents[2] / "mirage_blender"
_NAME = "mirage_blender_modules"


def addon_module(name):
    if _NAME not in sys.modules:
        pkg = types.ModuleType(_NAME)
        pkg.__path__ = [str(_DIR)]
        sys.modules[_NAME] = pkg
    return importlib.import_module(f"{_NAME}.{name}")
