#!/usr/bin/env python3
"""Build, set up, demo and test Mirage. Needs only python3 to start.

  python3 build.py          build dist/mirage_blender-<version>.zip
  python3 build.py setup    create/update .venv (idempotent)
  python3 build.py demo     setup + build + generate the demo flythrough into out/demo/
  python3 build.py test     setup + build + the whole pytest suite
  python3 build.py bench    setup + build + the evaluation scenes, report in out/bench/ (--quick for CI)
  python3 build.py train    setup + train the compact model into models/compact/
"""
import hashlib
import os
import re
import subprocess
import sys
import venv
import zipfile

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
PY = os.path.join(VENV, "bin", "python")
REQS = os.path.join(ROOT, "requirements.txt")
# requirements.txt includes the backend's own list: a change to either means a new install
REQ_FILES = (REQS, os.path.join(ROOT, "backend", "requirements.txt"))
STAMP = os.path.join(VENV, ".mirage-requirements.sha256")
# fixed timestamp so the same sources give the same zip, byte for byte
ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def version():
    with open(os.path.join(ROOT, "blender_manifest.toml"), encoding="utf-8") as f:
        return re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M).group(1)


def zip_path():
    return os.path.join(ROOT, "dist", f"mirage_blender-{version()}.zip")


def setup():
    digest = hashlib.sha256()
    for path in REQ_FILES:
        with open(path, "rb") as f:
            digest.update(f.read())
    want = digest.hexdigest()
    if os.path.isfile(STAMP) and os.path.isfile(PY):
        with open(STAMP) as f:
            if f.read().strip() == want:
                return
    if not os.path.isfile(PY):
        print("creating .venv", flush=True)
        venv.create(VENV, with_pip=True)
    print("installing requirements into .venv (about a minute)", flush=True)
    subprocess.check_call([PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", REQS])
    with open(STAMP, "w") as f:
        f.write(want)


def _files(folder, suffixes):
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(suffixes):
                full = os.path.join(dirpath, name)
                yield full, os.path.relpath(full, ROOT)


def build():
    """The extension zip: manifest and add-on at the root, the backend and models beside them."""
    out = zip_path()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    entries = [(os.path.join(ROOT, "blender_manifest.toml"), "blender_manifest.toml"),
               (os.path.join(ROOT, "LICENSE"), "LICENSE")]
    entries += [(full, os.path.relpath(full, os.path.join(ROOT, "mirage_blender")))
                for full, _ in _files("mirage_blender", (".py",))]
    entries += list(_files("backend", (".py", "requirements.txt")))
    entries += list(_files("models", (".json", ".safetensors", ".md")))
    tmp = out + ".part"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for full, arc in entries:
            info = zipfile.ZipInfo(arc.replace(os.sep, "/"), ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(full, "rb") as f:
                z.writestr(info, f.read())
    os.replace(tmp, out)
    print(f"built {os.path.relpath(out, ROOT)}", flush=True)
    return out


def run_py(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, MIRAGE_BACKEND_PYTHON=os.environ.get("MIRAGE_BACKEND_PYTHON", PY))
    return subprocess.call([PY, *args], cwd=ROOT, env=env)


def main(argv):
    cmd = argv[1] if len(argv) > 1 else "build"
    if cmd == "build":
        build()
        return 0
    if cmd == "setup":
        setup()
        return 0
    if cmd == "demo":
        setup()
        return run_py(os.path.join(ROOT, "tools", "demo.py"), "--zip", build(), "--out", os.path.join(ROOT, "out", "demo"))
    if cmd == "test":
        setup()
        build()
        return run_py("-m", "pytest", "-q", "tests", *argv[2:])
    if cmd == "bench":
        setup()
        return run_py(os.path.join(ROOT, "tools", "bench.py"), "--zip", build(), "--out", os.path.join(ROOT, "out", "bench"), *argv[2:])
    if cmd == "train":
        setup()
        return run_py(os.path.join(ROOT, "tools", "train.py"), *argv[2:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
