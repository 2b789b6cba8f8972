"""The add-on's modules without its package ``__init__`` (which registers UI classes)."""
import importlib
import pathlib
import sys
import types

_DIR = pathlib.Path(__file__).resolve().parents[2] / "mirage_blender"
_NAME = "mirage_blender_modules"


def addon_module(name):
    """``mirage_blender.<name>`` (dotted for subpackages: "gather.camera"). The repository root is on the
    package's path as well, so ``.backend`` resolves as in the built zip, where backend/ sits beside the
    add-on's modules."""
    if _NAME not in sys.modules:
        pkg = types.ModuleType(_NAME)
        pkg.__path__ = [str(_DIR), str(_DIR.parent)]
        sys.modules[_NAME] = pkg
    return importlib.import_module(f"{_NAME}.{name}")
