"""Set Up Backend through the real add-on in a fresh Blender user folder: a private environment built with the
Python that runs Blender, from a local wheel folder (torch included), then Generate with nothing set by hand;
and the bad cases, each one line, each leaving a working environment as it was."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.addon.loader import addon_module
from tests.conftest import ROOT

CASES_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "setup_cases.py")


def _can_unshare():
    return shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def run_cases(extension_zip, tmp, cases, offline_net=False):
    (tmp / "cases.json").write_text(json.dumps(cases))
    result = tmp / "result.json"
    env = {k: v for k, v in os.environ.items() if k not in ("MIRAGE_BACKEND_PYTHON", "MIRAGE_TEST_BACKEND_PYTHON")}
    cmd = [sys.executable, CASES_PY, extension_zip, str(tmp), str(tmp / "cases.json"), str(result)]
    if offline_net:
        # no network at all, and none of this machine's own package mirrors either (pip's config points at them)
        cmd = ["unshare", "-n", *cmd]
        env["PIP_CONFIG_FILE"] = os.devnull
    proc = subprocess.run(cmd, cwd=str(tmp), capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {r["name"]: r for r in json.loads(result.read_text())}


@pytest.fixture(scope="module")
def installed(extension_zip, backend_wheels, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("setup_ok")
    return run_cases(extension_zip, tmp, [
        {"name": "fresh", "wheels": backend_wheels, "env_folder": str(tmp / "env"), "then": "generate"},
        {"name": "cancel", "wheels": backend_wheels, "env_folder": str(tmp / "env-cancel"), "existing": True,
         "then": "second_click"},
    ])


def test_set_up_backend_then_generate_with_nothing_set_by_hand(installed):
    r = installed["fresh"]
    assert r["before"]["python_pref"] == "" and r["before"]["folder"]["names"] == []
    assert r["error"] is None, r["log_tail"]
    assert r["folder"]["names"] == ["venv"]  # no staging or old copy left behind
    assert r["python_pref"].endswith(os.path.join("env", "venv", "bin", "python"))
    assert "Ready: torch 2.13.0" in r["log_tail"] and "CPU only" in r["log_tail"]
    assert "step: Installing torch" in r["log_tail"] and "--isolated --no-index --find-links" in r["log_tail"]
    assert r.get("generate_error") is None
    assert r["frames"] == ["000001.png", "000002.png", "000003.png"]
    assert r["status"].startswith("Done: 3 frames")
    assert r["after_remove"] == {"python_pref": "", "folder": {"names": [], "files": [], "marker": None}}


def test_second_click_and_cancel_leave_the_working_environment(installed):
    r = installed["cancel"]
    assert r["step_when_clicked"] == "Installing torch"
    assert r["second_click"].startswith("Error: Set Up Backend is already running: Installing torch")
    assert r["staging_while_running"]  # the install works beside the environment, never in it
    assert r["cancelled"] and not r["alive_after_cancel"] and not r["staging_after"]
    assert r["state_error"] == "Set Up Backend was cancelled; the previous environment (if any) is unchanged"
    assert r["folder"] == r["before"]["folder"] and r["folder"]["marker"] == "intact"
    assert r["python_pref"] == r["before"]["python_pref"]


BAD = [
    ("online_access_off", {"online": False},
     "Online access is off, so Set Up Backend cannot download: allow it in Preferences > System > Network"),
    ("wheel_folder_without_torch", {"wheels": "NO_TORCH"}, "has no wheel of torch==2.13.0 for this Python"),
    ("wheel_folder_missing", {"wheels": "MISSING"}, "The wheel folder does not exist: "),
    ("disk_full", {"online": True, "env_folder": "TMPFS"}, "The backend needs about 2.5 GB free in "),
]


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory):
    """A real small disk (tmpfs, 64 MiB) for the full-disk cases; needs root's mount."""
    where = tmp_path_factory.mktemp("smalldisk")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        yield None
        return
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture(scope="module")
def bad(extension_zip, backend_wheels, tmp_path_factory, tmpfs):
    tmp = tmp_path_factory.mktemp("setup_bad")
    no_torch = tmp / "wheels-no-torch"
    no_torch.mkdir()
    for name in os.listdir(backend_wheels):
        if name.endswith(".whl") and not name.startswith("torch-"):
            shutil.copy(os.path.join(backend_wheels, name), no_torch / name)
    cases = []
    for name, setup, _ in BAD:
        if setup.get("env_folder") == "TMPFS" and tmpfs is None:
            continue
        wheels = {"NO_TORCH": str(no_torch), "MISSING": str(tmp / "nope")}.get(setup.get("wheels"), "")
        env_folder = str(tmpfs / "env") if setup.get("env_folder") == "TMPFS" else str(tmp / name)
        cases.append({"name": name, "online": setup.get("online", True), "wheels": wheels, "env_folder": env_folder,
                      "existing": True})
    net = _can_unshare()
    if net:
        cases.append({"name": "no_network", "online": True, "wheels": "", "env_folder": str(tmp / "no_network"),
                      "existing": True})
    return run_cases(extension_zip, tmp, cases, offline_net=net)


@pytest.mark.parametrize("name, message", [(n, m) for n, _, m in BAD] + [
    ("no_network", "Cannot reach the package index to download ")])
def test_bad_set_up_is_one_line_and_keeps_the_environment(bad, name, message):
    if name not in bad:
        pytest.skip("no network namespace (unshare -n) here" if name == "no_network" else "no tmpfs mount here")
    r = bad[name]
    assert r["error"] is not None and r["error"].startswith("Error: "), r
    line = r["error"][len("Error: "):].strip()
    assert message in line and "\n" not in line, line
    assert r["folder"] == r["before"]["folder"] and r["folder"]["marker"] == "intact"  # nothing half-installed
    assert r["python_pref"] == r["before"]["python_pref"]


def test_a_disk_that_fills_up_mid_install_is_one_line(backend_wheels, tmpfs, tmp_path):
    """The space check passed (asked for nothing), then the real disk runs full while torch unpacks."""
    if tmpfs is None:
        pytest.skip("no tmpfs mount here")
    setup = addon_module("setup")
    base = tmpfs / "midway"
    job = setup.Install(str(base / "venv"), sys.executable, build="cpu", wheel_folder=backend_wheels,
                        log_path=str(tmp_path / "setup.log"), need_bytes=0)
    with pytest.raises(setup.SetupError) as e:
        job.run()
    assert str(e.value).startswith("The disk is full while installing torch==2.13.0 into "), str(e.value)
    assert not os.path.exists(job.staging) and not os.path.exists(job.env_dir)


def test_the_backend_requirements_ship_in_the_zip_and_hold_no_dev_tools(extension_zip):
    import zipfile
    with zipfile.ZipFile(extension_zip) as z:
        reqs = z.read("backend/requirements.txt").decode()
        manifest = z.read("blender_manifest.toml").decode()
    pins = [line.split("==")[0] for line in reqs.splitlines() if "==" in line and not line.startswith("#")]
    assert pins[0] == "torch" and {"numpy", "transformers", "huggingface_hub"} <= set(pins)
    assert not {"bpy", "pytest", "matplotlib"} & set(pins)
    assert 'network = "' in manifest
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        assert "-r backend/requirements.txt" in f.read()
