"""A render farm on this machine: a worker's Blender set-up (the extension installed in a user folder of its
own), the stand-in `blender` executable (blender_standin.py: no Blender binary of 4.2 or newer exists here),
the real OpenJD runtime (openjd-cli) and a two-shot set saved as a .blend on "shared storage"."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def openjd_cli() -> str:
    """openjd-cli beside this interpreter (python3 build.py setup installs it) or on the PATH."""
    found = shutil.which("openjd", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    assert found, "openjd-cli is not installed: python3 build.py setup installs it (requirements.txt)"
    return found


def run(cmd, env, timeout=600, **kw):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def farm(extension_zip, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("farm")
    worker = tmp / "worker"
    proc = run([sys.executable, os.path.join(HERE, "worker_setup.py"), extension_zip, str(worker)], dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    blender = tmp / "bin" / "blender"
    blender.parent.mkdir()
    blender.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{os.path.join(HERE, "blender_standin.py")}" "$@"\n')
    blender.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "MIRAGE_BACKEND_PYTHON"}
    env.update(BLENDER_USER_RESOURCES=str(worker), OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    shared = tmp / "shared"
    proc = run([str(blender), "-b", "--python", os.path.join(HERE, "make_set.py"), "--", str(shared)], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return SimpleNamespace(tmp=tmp, blender=str(blender), env=env, worker=worker, blend=shared / "set.blend",
                           openjd=openjd_cli())


def copy_set(farm, name):
    """A copy of the set's .blend in a folder of its own (its frames go to <folder>/mirage/)."""
    folder = farm.tmp / name
    folder.mkdir()
    shutil.copyfile(farm.blend, folder / "set.blend")
    return folder / "set.blend"


@pytest.fixture(scope="session")
def in_session(farm):
    """The set made in one Blender session, as a studio runs it headless: bpy.ops.mirage.generate(), saved."""
    blend = copy_set(farm, "session")
    env = dict(farm.env, MIRAGE_BACKEND_PYTHON=sys.executable)
    proc = run([farm.blender, "-b", str(blend), "--python-exit-code", "1", "--python-expr",
                "import bpy; bpy.ops.mirage.generate(); bpy.ops.wm.save_mainfile()"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return blend


def frames(blend):
    """shot -> frame file -> sha256, for every shot folder beside the .blend."""
    root = blend.parent / "mirage"
    out = {}
    for shot in sorted(os.listdir(root)):
        d = root / shot / "frames"
        if d.is_dir():
            out[shot] = {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in sorted(os.listdir(d))}
    return out


STRIPS = ("import bpy, json, sys; json.dump(sorted((s.name, s.frame_final_start, s.frame_final_end, s.directory, "
          "len(s.elements)) for s in bpy.context.scene.sequence_editor.strips_all), open(sys.argv[-1], 'w'))")


def strips(farm, blend):
    """(name, start, end, directory, images) of every strip in a .blend's Sequencer."""
    out = blend.parent / "strips.json"
    proc = run([farm.blender, "-b", str(blend), "--python-expr", STRIPS, "--", str(out)], farm.env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [tuple(s) for s in json.loads(out.read_text())]


# what both shots' strips are once the set is made: named after shot and segment, "//" paths
EXPECTED_STRIPS = [("A 001", 1, 3, "//mirage/A/frames/", 2), ("A 002", 3, 5, "//mirage/A/frames/", 2),
                   ("B 001", 5, 7, "//mirage/B/frames/", 2), ("B 002", 7, 9, "//mirage/B/frames/", 2)]
