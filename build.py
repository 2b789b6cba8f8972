#!/usr/bin/env python3
"""Build, set up, demo and test Mirage. Needs only python3 to start.

  python3 build.py          build dist/mirage_blender-<version>.zip
  python3 build.py setup    create/update .venv (idempotent)
  python3 build.py demo     setup + build + generate the demo flythrough into out/demo/
  python3 build.py test     setup + build + the whole pytest suite
  python3 build.py bench    setup + build + the evaluation scenes, report in out/bench/ (--quick for CI;
                            --resolution 1280x720,1920x1080: cost per frame at those sizes beside Cycles)
  python3 build.py bench-shots  setup + build + the shots of one set, report in out/bench/shots/ (--quick)
  python3 build.py train    setup + train the compact model into models/compact/
  python3 build.py matrix   setup + build + the add-on's end-to-end tests in the bpy of Blender 4.2 LTS, 4.5 LTS,
                            5.0 and the newest release (Python 3.13 where it needs it), one venv each in .matrix/
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
    entries += list(_files("farm", (".js", ".yaml")))  # the Flamenco job type and OpenJD template, for studios
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


# bpy wheels of the Blender releases the extension supports: (version, Python); None asks the registry for the newest
MATRIX = [("4.2.23", "3.11"), ("4.5.15", "3.11"), ("5.0.1", "3.11"), (None, "3.13")]
MATRIX_DIR = os.path.join(ROOT, ".matrix")
MATRIX_TESTS = ["tests/addon/test_generate.py", "tests/addon/test_bad_inputs.py", "tests/addon/test_setup.py"]
# what the add-on's tests need beside bpy (bpy pins its own numpy)
MATRIX_TOOLS = ["pytest==9.2.0", "pillow==13.0.0"]
# a timing test: it measures the machine as much as the add-on, and stays in the main suite
MATRIX_DESELECT = ["tests/addon/test_generate.py::test_ui_path_never_blocks"]


def find_python(version):
    """An interpreter of that version: this one, python3.X on PATH, or pyenv's."""
    import glob
    import shutil
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        root = os.path.expanduser("~/.pyenv")
    candidates = [sys.executable, shutil.which(f"python{version}"),
                  *sorted(glob.glob(os.path.join(root, "versions", f"{version}*", "bin", f"python{version}")), reverse=True)]
    for path in candidates:
        if not path:
            continue
        try:  # a pyenv shim of a version that is not active answers with an error
            out = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return path
    return None


def newest_bpy(python):
    """The newest bpy release for that interpreter, as its pip reports it."""
    out = subprocess.run([python, "-m", "pip", "index", "versions", "bpy", "--disable-pip-version-check"],
                         capture_output=True, text=True, timeout=300)
    m = re.search(r"^bpy \(([^)]+)\)", out.stdout, re.M)
    return m.group(1) if m else None


def matrix_venv(bpy_version, python):
    """.matrix/bpy-<version>: a venv with that bpy and the test tools (made once, reused)."""
    folder = os.path.join(MATRIX_DIR, f"bpy-{bpy_version}")
    py = os.path.join(folder, "bin", "python")
    stamp = os.path.join(folder, ".mirage-matrix")
    want = " ".join([f"bpy=={bpy_version}", *MATRIX_TOOLS])
    if os.path.isfile(stamp) and open(stamp).read() == want:
        return py
    print(f"matrix: installing bpy {bpy_version} into {os.path.relpath(folder, ROOT)} (a few hundred MB)", flush=True)
    subprocess.check_call([python, "-m", "venv", "--clear", folder])
    subprocess.check_call([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *want.split()])
    with open(stamp, "w") as f:
        f.write(want)
    return py


def matrix(args):
    """The add-on's end-to-end tests in every supported Blender's bpy; the backend runs in .venv's Python."""
    import time
    build()
    rows, failed = [], False
    for bpy_version, py_version in MATRIX:
        python = find_python(py_version)
        if python is None:
            rows.append((bpy_version or "newest", py_version, f"skipped: no Python {py_version} (PATH or pyenv)"))
            continue
        bpy_version = bpy_version or newest_bpy(python)
        if bpy_version is None:
            rows.append(("newest", py_version, "skipped: the registry named no bpy for it"))
            continue
        try:
            py = matrix_venv(bpy_version, python)
        except subprocess.CalledProcessError as e:
            rows.append((bpy_version, py_version, f"FAILED to install: {e}"))
            failed = True
            continue
        env = dict(os.environ, PYTHONPATH=ROOT, MIRAGE_BACKEND_PYTHON=PY, MIRAGE_TEST_BACKEND_PYTHON=PY)
        deselect = [a for t in MATRIX_DESELECT for a in ("--deselect", t)]
        print(f"matrix: bpy {bpy_version} (Python {py_version})", flush=True)
        t = time.monotonic()
        proc = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *MATRIX_TESTS, *deselect, *args],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        sys.stdout.write(proc.stdout[-4000:])
        tail = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
        rows.append((bpy_version, py_version, ("ok: " if proc.returncode == 0 else "FAILED: ") +
                     (tail[-1].strip("= ") if tail else f"exit {proc.returncode} after {time.monotonic() - t:.0f} s")))
        failed |= proc.returncode != 0
    print("\nbpy        Python  result")
    for v, p, result in rows:
        print(f"{v:<10} {p:<7} {result}")
    return 1 if failed else 0


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
        # --resolution WxH[,WxH]: cost at production sizes beside Cycles (tools/bench_resolution.py)
        tool = "bench_resolution.py" if any(a.split("=")[0] == "--resolution" for a in argv[2:]) else "bench.py"
        return run_py(os.path.join(ROOT, "tools", tool), "--zip", build(), "--out", os.path.join(ROOT, "out", "bench"), *argv[2:])
    if cmd == "bench-shots":
        setup()
        return run_py(os.path.join(ROOT, "tools", "bench_shots.py"), "--zip", build(), "--out",
                      os.path.join(ROOT, "out", "bench", "shots"), *argv[2:])
    if cmd == "matrix":
        setup()
        return matrix(argv[2:])
    if cmd == "train":
        setup()
        return run_py(os.path.join(ROOT, "tools", "train.py"), *argv[2:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
