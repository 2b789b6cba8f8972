"""What the models folder offers, read from each model's model.json. Stdlib only, so the add-on's panel,
the backend's `check` and the model registry describe a model the same way, and none of them needs torch.

A model.json holds:
  "class": "module:Class"   the model's class in backend.models (imported only when the model is loaded)
  "args": {...}             its constructor's arguments
  "title", "description"    what the user reads
  "panel": {"number", "label", "tooltip", "order"}   offered in the add-on's Model menu (number: the saved enum
                            value; order: the menu's order)
  "needs": {"cuda", "prompt", "gpu_gb", "download_gb", "shading"}   what running it takes: a CUDA GPU; a prompt; gpu_gb, the
                            least free GPU memory in GB (1e9 bytes) the backend accepts a job with at the add-on's
                            default Segment Length and the model's largest trained resolution (the backend
                            checks each job's own figure before any work; tests/backend/test_wan.py recomputes
                            it); download_gb, the weights downloaded on first use, in GB; shading, the still
                            world's light per frame (the add-on's shading map, which costs export time)
or "alias": "other" (plus its own title, description and panel): the name runs the other model.
"""
import json
import os
import re
from dataclasses import dataclass, field

from .protocol import ModelError

# MIRAGE_MODELS_DIR points the backend at another models folder (the bench does); read when asked
DEFAULT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
MODELS_DIR = None  # tests set this; None: MIRAGE_MODELS_DIR, else the folder beside the backend
CLASS = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
NEEDS = {"cuda": False, "prompt": False, "gpu_gb": None, "download_gb": None, "shading": False}


@dataclass(frozen=True)
class ModelInfo:
    """One model as its model.json describes it; an alias is described by its own file, `runs` names the
    model it loads."""
    name: str
    runs: str
    folder: str
    title: str
    description: str = ""
    cls: str = ""
    args: dict = field(default_factory=dict)
    panel: dict = None
    needs: dict = field(default_factory=lambda: dict(NEEDS))


def models_dir() -> str:
    return MODELS_DIR or os.environ.get("MIRAGE_MODELS_DIR") or DEFAULT_DIR


def available() -> list:
    """Names of the models in the models folder (each a folder with a model.json)."""
    root = models_dir()
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "model.json")))


def _read(name):
    folder = os.path.join(models_dir(), name)
    path = os.path.join(folder, "model.json")
    if not os.path.isfile(path):
        raise ModelError(f"unknown model '{name}' (available: {', '.join(available()) or 'none'})")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"model '{name}' has an unreadable model.json: {e}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"model '{name}' has a model.json that is not a JSON object")
    return folder, cfg


def describe(name: str, _seen: tuple = ()) -> ModelInfo:
    """The ModelInfo of `name`, following an alias to the model it runs. Raises ModelError."""
    folder, cfg = _read(name)
    title = str(cfg.get("title") or name)
    panel = cfg.get("panel") if isinstance(cfg.get("panel"), dict) else None
    alias = cfg.get("alias")
    if isinstance(alias, str) and alias != name:
        if alias in _seen:
            raise ModelError(f"model '{name}' is an alias in a loop ({' -> '.join(_seen + (name, alias))})")
        target = describe(alias, _seen + (name,))
        return ModelInfo(name=name, runs=target.runs, folder=target.folder, title=title,
                         description=str(cfg.get("description", target.description)), cls=target.cls,
                         args=target.args, panel=panel, needs=target.needs)
    cls = cfg.get("class")
    if not isinstance(cls, str) or not CLASS.fullmatch(cls):
        raise ModelError(f"model '{name}' has no valid 'class' in its model.json (a 'module:Class' of backend.models, "
                         f"got {cls!r})")
    args = cfg.get("args", {})
    if not isinstance(args, dict):
        raise ModelError(f"model '{name}': 'args' in its model.json must be an object")
    needs = dict(NEEDS)
    needs.update({k: v for k, v in (cfg.get("needs") or {}).items() if k in NEEDS})
    return ModelInfo(name=name, runs=name, folder=folder, title=title, description=str(cfg.get("description", "")),
                     cls=cls, args=args, panel=panel, needs=needs)


def catalog() -> list:
    """ModelInfo of every model that can be described, by name; a broken model.json is left out."""
    out = []
    for name in available():
        try:
            out.append(describe(name))
        except ModelError:
            continue
    return out


def as_json(info: ModelInfo) -> dict:
    """What the backend's `check` reports of a model (plain JSON)."""
    return {"name": info.name, "runs": info.runs, "title": info.title, "description": info.description,
            "panel": info.panel, "needs": info.needs}
