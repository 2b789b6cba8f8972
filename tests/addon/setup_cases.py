"""Set Up Backend cases in ONE fresh bpy session with the built zip installed and no backend configured.

  python setup_cases.py ZIP OUT_DIR CASES.json RESULT.json

Each case is {"name", "online", "wheels", "env_folder", "existing", "then": "generate" | "second_click" | None}.
`existing` puts a stand-in for a working environment (a venv with a marker file) where the set-up builds, with
Backend Python pointing at it, so the case can show it is left intact. Results per case: the operator's error
line, the preferences after, what the environment folder holds, and for "generate" the frames written.
"""
import importlib
import json
import os
import sys
import time
import traceback
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cases import W, H, PKG  # noqa: E402  (imports tools/scenes, which isolates Blender's user folder)
import scenes  # noqa: E402
import bpy  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

MARKER = "working-environment.txt"


def addon_prefs():
    return bpy.context.preferences.addons[PKG].preferences


def folder_state(base):
    """What the environment folder holds (the set-up's log aside) and the working environment's files."""
    names = sorted(n for n in os.listdir(base) if n != "setup.log") if os.path.isdir(base) else []
    env = os.path.join(base, "venv")
    files = sorted(os.path.relpath(os.path.join(d, f), env) for d, _, fs in os.walk(env) for f in fs)
    marker = os.path.join(env, MARKER)
    return {"names": names, "files": files, "marker": open(marker).read() if os.path.isfile(marker) else None}


def generate(out):
    scene = scenes.build_room(width=W, height=H, frames=3)
    os.makedirs(out, exist_ok=True)
    ref = os.path.join(out, "reference.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(ref)
    s = scene.mirage
    s.reference_image = ref
    s.output_dir = os.path.join(out, "mirage")
    s.segment_length = 2
    s.device = "CPU"
    bpy.ops.mirage.generate()
    return sorted(os.listdir(os.path.join(out, "mirage", "frames")))


def second_click(case):
    """An install started as the UI starts it, a second Set Up Backend meanwhile, then Cancel."""
    setup_ops = importlib.import_module(PKG + ".setup_ops")
    job = setup_ops._new_install(bpy.context)
    setup_ops._install["job"] = job
    job.start()
    deadline = time.monotonic() + 300
    while job.state.step != "Installing torch" and job.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = {"step_when_clicked": job.state.step}
    try:
        bpy.ops.mirage.install_backend()
        seen["second_click"] = None
    except RuntimeError as e:
        seen["second_click"] = str(e)
    time.sleep(1.0)  # torch is being unpacked now
    seen["staging_while_running"] = os.path.isdir(job.staging)
    bpy.ops.mirage.cancel_install()
    job.join(120)
    seen.update(alive_after_cancel=job.alive, cancelled=job.state.cancelled, state_error=job.state.error,
                staging_after=os.path.exists(job.staging))
    return seen


def main():
    zip_path, out, cases_path, result_path = sys.argv[1:5]
    with open(cases_path) as f:
        cases = json.load(f)
    scenes.install_extension(zip_path)
    results = []
    for case in cases:
        p = addon_prefs()
        p.torch_build = "CPU"
        p.wheel_folder = case.get("wheels") or ""
        p.env_folder = case["env_folder"]
        p.backend_python = ""
        bpy.context.preferences.system.use_online_access = bool(case.get("online"))
        base = case["env_folder"]
        if case.get("existing"):
            venv.create(os.path.join(base, "venv"), with_pip=False)
            with open(os.path.join(base, "venv", MARKER), "w") as f:
                f.write("intact")
            p.backend_python = os.path.join(base, "venv", "bin", "python")
        before = {"python_pref": p.backend_python, "folder": folder_state(base)}
        res = {"name": case["name"], "before": before, "online_access": bpy.app.online_access}
        t0 = time.perf_counter()
        try:
            if case.get("then") == "second_click":
                res.update(second_click(case))
                res["error"] = None
            else:
                bpy.ops.mirage.install_backend()
                res["error"] = None
        except RuntimeError as e:
            res["error"] = str(e)
        except Exception:
            res["error"] = "UNEXPECTED " + traceback.format_exc()
        res["seconds"] = round(time.perf_counter() - t0, 1)
        res["python_pref"] = addon_prefs().backend_python
        res["folder"] = folder_state(base)
        log = os.path.join(base, "setup.log")
        res["log_tail"] = open(log).read() if os.path.isfile(log) else None
        if case.get("then") == "generate" and res["error"] is None:
            try:
                res["frames"] = generate(os.path.join(out, case["name"]))
                res["status"] = bpy.context.window_manager.mirage.text
            except RuntimeError as e:
                res["generate_error"] = str(e)
            bpy.ops.mirage.remove_backend()
            res["after_remove"] = {"python_pref": addon_prefs().backend_python, "folder": folder_state(base)}
        results.append(res)
        with open(result_path, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    scenes.run_script(main)
