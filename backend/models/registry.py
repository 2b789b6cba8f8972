"""Loading a model by name: its folder's model.json (backend/catalog.py reads it) names the class as
"module:Class" of backend.models; the module is imported only then, and the model gets its own folder."""
import importlib
from typing import Callable, Optional

from .. import catalog
from .base import FrameModel, ModelError, SegmentModel


def available() -> list:
    """Names of the models shipped in the models folder."""
    return catalog.available()


def model_class(spec: str, name: str) -> type:
    """The class a "module:Class" string names, which must be a frame or segment model of this package."""
    module, cls_name = spec.split(":")
    try:
        mod = importlib.import_module(f"{__package__}.{module}")
    except ModuleNotFoundError as e:
        raise ModelError(f"model '{name}' names a module that does not exist: {module} ({e.name})") from None
    cls = vars(mod).get(cls_name)
    if not (isinstance(cls, type) and issubclass(cls, (FrameModel, SegmentModel))):
        raise ModelError(f"model '{name}' names {spec}, which is not a model class")
    return cls


def load(name: str, device: str = "cpu", emit: Optional[Callable] = None) -> "FrameModel | SegmentModel":
    """The model `name` (an alias such as 'builtin' loads the model it names), built on `device`; `emit` receives
    protocol messages it reports itself (downloads)."""
    info = catalog.describe(name)
    cls = model_class(info.cls, name)
    return cls(info.runs, folder=info.folder, device=device, emit=emit, **info.args)
