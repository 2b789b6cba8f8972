"""The structure the rooms promise: imports point one way (no cycle, lazy imports included), the segment loop
never probes a model, memories leave nothing on themselves, and no bench or training code ships in the zip."""
import ast
import os
import zipfile

import pytest

from tests.conftest import ROOT

PACKAGES = ("backend", "mirage_blender")


def modules(package):
    """Module name -> path for every .py file of a package."""
    out = {}
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    return out


def imports(name, path, known):
    """The package's modules `name` imports anywhere in its file (inside functions too)."""
    is_pkg = path.endswith("__init__.py")
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            head = base[:len(base) - node.level + 1] if node.level else []
            mod = ".".join(head + ([node.module] if node.module else []))
            # `from pkg import sub` imports the submodule; `from mod import name` the module itself
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        for t in targets:
            # the add-on imports the backend as its own subpackage (.backend) inside Blender
            t = t.replace("mirage_blender.backend", "backend")
            if t in known and t != name:
                found.add(t)
    return found


def import_graph():
    """Module -> the modules of backend/ and mirage_blender/ it imports."""
    known = {}
    for p in PACKAGES:
        known.update(modules(p))
    return {name: imports(name, path, known) for name, path in known.items()}


def test_no_import_cycles():
    graph = import_graph()
    assert "backend.models.registry" in graph and graph["backend.models.registry"]  # the scan sees imports
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = "open"
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = "done"
    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert cycles == []


def test_a_cycle_would_be_found(tmp_path):
    # the scan itself: two modules importing each other lazily are a cycle
    (tmp_path / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "b.py").write_text("from .a import f\n")
    known = {"pkg.a": str(tmp_path / "a.py"), "pkg.b": str(tmp_path / "b.py")}
    assert imports("pkg.a", known["pkg.a"], known) == {"pkg.b"}
    assert imports("pkg.b", known["pkg.b"], known) == {"pkg.a"}


@pytest.mark.parametrize("name", ["pipeline.py", "step.py"])
def test_the_loop_never_probes_a_model(name):
    tree = ast.parse(open(os.path.join(ROOT, "backend", name), encoding="utf-8").read())
    probes = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
              and n.func.id in ("hasattr", "getattr")]
    assert probes == []


def test_memories_keep_no_state_of_the_last_read():
    for name, path in modules("backend").items():
        assert "last_read" not in open(path, encoding="utf-8").read(), name


def test_the_zip_carries_no_bench_or_training_code(extension_zip):
    with zipfile.ZipFile(extension_zip) as z:
        names = z.namelist()
    assert "backend/pipeline.py" in names and "backend/models/registry.py" in names
    assert not [n for n in names if n.startswith(("tools/", "tests/")) or os.path.basename(n) in
                ("baselines.py", "bench.py", "bench_wan.py", "train.py", "metrics.py")]


# the values that carry one camera's per-pixel channels across the seams, from the add-on's export to the models
SEAMS = {"mirage_blender/core/frame.py": ["FrameExport"], "backend/protocol.py": ["Frame"],
         "backend/step.py": ["View"], "backend/models/base.py": ["FrameNeeds", "Exemplar", "SegmentFrame"]}


def class_fields(path, name):
    """The annotated fields of class `name` in the file at `path` (repository-relative)."""
    tree = ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read())
    cls, = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    return [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]


def test_one_value_carries_every_per_pixel_channel():
    from backend.channels import CHANNELS, Maps
    import dataclasses
    names = [c.name for c in CHANNELS]
    assert [f.name for f in dataclasses.fields(Maps)] == names
    assert {"depth", "ids", "parts", "shade", "rest", "normal"} <= set(names)
    # a channel crosses every seam inside Maps, under its one name: no seam value has a field of its own for one
    channel_like = set(names) | {f"pixel_{n}" for n in names} | {"pixel_target", "pixel_parts", "pixel_shade"}
    for path, classes in SEAMS.items():
        for name in classes:
            fields = class_fields(path, name)
            assert "maps" in fields, (path, name)
            assert not channel_like & set(fields), (path, name, sorted(channel_like & set(fields)))
    # the backend reads a camera's channels in one place: Inputs.maps, with no accessor per channel
    inputs = [n.name for n in ast.walk(ast.parse(open(os.path.join(ROOT, "backend", "inputs.py")).read()))
              if isinstance(n, ast.FunctionDef)]
    assert "maps" in inputs and not {"object_ids", "parts", "shade", "light", "albedo", "scene_depth"} & set(inputs)


def test_a_channel_outside_maps_would_be_found(tmp_path, monkeypatch):
    # the check itself: a seam value with a field of its own for a channel fails it
    monkeypatch.setitem(SEAMS, "x.py", ["Frame"])
    (tmp_path / "x.py").write_text("class Frame:\n    maps: int = 0\n    shade: int = 0\n")
    monkeypatch.setattr(os.path, "join", lambda *p: str(tmp_path / p[-1]) if p[-1] == "x.py" else _join(*p))
    with pytest.raises(AssertionError):
        test_one_value_carries_every_per_pixel_channel()


_join = os.path.join
