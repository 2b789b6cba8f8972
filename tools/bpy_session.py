"""The bench tools' Blender side, run the same way by each: a fresh Python process loads bpy (one Blender
session, its user folder isolated by tools/scenes.py), reads its task from a JSON file and writes its result
to the task's "result" file."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(script: str, task: dict, folder: str) -> int:
    """Run `script --blender-session <folder>/blender_task.json`, its output in <folder>/blender.log; the exit
    status. The backend it starts runs in this Python unless MIRAGE_BACKEND_PYTHON says otherwise."""
    task_path = os.path.join(folder, "blender_task.json")
    with open(task_path, "w") as f:
        json.dump(task, f, indent=1)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("MIRAGE_BACKEND_PYTHON", sys.executable)
    with open(os.path.join(folder, "blender.log"), "w") as logf:
        return subprocess.call([sys.executable, os.path.abspath(script), "--blender-session", task_path],
                               cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)


def result(task: dict):
    """What the session wrote to the task's result file, or None where it wrote nothing readable."""
    try:
        with open(task["result"]) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
