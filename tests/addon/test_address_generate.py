"""Surface addresses through a real Generate (tests/addon/address_cases.py in bpy): an object bent by shape keys
is addressed at rest on every frame, and each object's own add_rest_position_attribute comes back after the
export."""
import json
import os
import subprocess
import sys

import pytest

CASES_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "address_cases.py")


@pytest.fixture(scope="module")
def result(extension_zip, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("address")
    path = tmp / "result.json"
    proc = subprocess.run([sys.executable, CASES_PY, extension_zip, str(tmp), str(path)], cwd=str(tmp),
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MIRAGE_BACKEND_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(path.read_text())


def test_the_users_rest_position_setting_comes_back(result):
    assert result["error"] is None, result["error"]
    assert result["before"] == {"FlagA": False, "FlagB": True}
    assert result["after"] == result["before"]


def test_a_bent_object_is_addressed_at_rest_on_every_frame(result):
    assert {"FlagA", "FlagB"} <= set(result["objects"])  # both change shape: each has a memory of its own
    first, last = (result["frames"][k] for k in sorted(result["frames"], key=int))
    assert first["pixels"] > 20 and last["pixels"] > 20
    assert last["local_y"] > 0.2  # bent on the last frame ...
    assert first["rest_y"] < 1e-4 and last["rest_y"] < 1e-4  # ... but its addresses lie on its flat rest shape
