"""The models the add-on offers and what each needs, as their model.json files say (backend/catalog.py):
the add-on never recognises a model by its name."""
from .backend import catalog

DEFAULT = "builtin"  # the Model menu's default where the models folder has it


def menu_items() -> list[tuple[str, str, str, int]]:
    """(name, label, tooltip, number) of every model with a panel entry, by the entries' "order" (then name). The
    number is what a saved .blend stores, so it stays with its model when models are added."""
    items = []
    for info in catalog.catalog():
        panel = info.panel
        if not panel or not isinstance(panel.get("number"), int):
            continue
        order = panel.get("order") if isinstance(panel.get("order"), int) else 1 << 30
        items.append((order, info.name, str(panel.get("label") or info.title),
                      str(panel.get("tooltip") or info.description), panel["number"]))
    return [item[1:] for item in sorted(items)]


def needs(name: str) -> dict:
    """What running the model takes ({"cuda", "prompt", "gpu_gb", "download_gb"}), read now from its
    model.json; the defaults for a model the folder does not describe (the backend names the problem)."""
    try:
        return dict(catalog.describe(name).needs)
    except catalog.ModelError:
        return dict(catalog.NEEDS)
