import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def backend_env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_backend(job_path, *args, timeout=120, **popen):
    """The backend as the add-on runs it: a real subprocess speaking JSON lines."""
    proc = subprocess.run([sys.executable, "-m", "backend", "run", job_path, *args], cwd=ROOT,
                          env=backend_env(), capture_output=True, text=True, timeout=timeout, **popen)
    msgs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, msgs


@pytest.fixture(scope="session")
def extension_zip():
    import build
    return build.build()


# the interpreter with torch that the add-on tests start the backend with; the version matrix (build.py matrix)
# runs the add-on's tests in each bpy version's own venv, which has no torch, and names .venv's Python here
BACKEND_PYTHON = os.environ.get("MIRAGE_TEST_BACKEND_PYTHON") or sys.executable


def backend_has_cuda() -> bool:
    """Whether the backend's torch sees a CUDA device (asked in BACKEND_PYTHON, which has torch)."""
    out = subprocess.run([BACKEND_PYTHON, "-c", "import torch; print(torch.cuda.is_available())"],
                         capture_output=True, text=True, timeout=300)
    return out.stdout.strip() == "True"


@pytest.fixture(scope="session")
def backend_wheels():
    """A local wheel folder with the backend's requirements for this Python (out/wheels-*, kept between runs):
    what an offline studio points Set Up Backend at. Torch must be a CPU wheel found without the network (the
    multi-GB CUDA build is never fetched here); skipped when there is none for this Python."""
    import hashlib
    import shutil
    reqs = os.path.join(ROOT, "backend", "requirements.txt")
    with open(reqs, "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:12]
    folder = os.path.join(ROOT, "out", f"wheels-py{sys.version_info.major}{sys.version_info.minor}-{key}")
    done = os.path.join(folder, ".complete")
    if os.path.isfile(done):
        return folder
    part = folder + ".part"
    shutil.rmtree(part, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", part]
    with open(reqs) as f:
        torch = next(line.strip() for line in f if line.startswith("torch=="))
    local = subprocess.run([*pip, "--no-deps", "--no-index", torch], capture_output=True, text=True, timeout=600)
    if local.returncode != 0:
        pytest.skip(f"no local CPU wheel of {torch} for Python {sys.version_info.major}.{sys.version_info.minor}")
    got = subprocess.run([*pip, "-r", reqs, "pip==26.3"], capture_output=True, text=True, timeout=1200)
    assert got.returncode == 0, got.stderr[-2000:]
    open(os.path.join(part, ".complete"), "w").close()
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(part, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_depth_cache(tmp_path_factory):
    """A Hugging Face cache with a tiny random Depth Anything V2 (tests/tiny_depth.py), built by the backend's
    Python, which has torch and transformers."""
    cache = tmp_path_factory.mktemp("depth") / "hub"
    code = "import sys; from tests.tiny_depth import build_tiny_depth_cache as b; b(sys.argv[1])"
    proc = subprocess.run([BACKEND_PYTHON, "-c", code, str(cache)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return cache
