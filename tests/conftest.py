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
