"""Add-on preferences: which Python runs the backend (torch stays out of Blender's own Python), and the
backend's set-up into a private environment (setup_ops.py)."""
import os

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from . import runner, setup, setup_ops

# the last check's answer; checking imports torch in a subprocess, too slow to do on every redraw
_status = setup_ops.status


def get(context=None):
    addon = (context or bpy.context).preferences.addons.get(__package__)
    return addon.preferences if addon else None


def python_pref(context=None) -> str:
    """Backend Python as set, else the environment Set Up Backend made, when there is one (the
    environment variable still overrides both, in runner.backend_python)."""
    p = get(context)
    if p and p.backend_python:
        return p.backend_python
    made = setup.env_python(setup_ops.env_dir(context))
    return made if os.path.isfile(made) else ""


def stall_timeout(context=None) -> int:
    p = get(context)
    return p.stall_timeout if p else 300


class MIRAGE_OT_check_backend(bpy.types.Operator):
    bl_idname = "mirage.check_backend"
    bl_label = "Check Backend"
    bl_description = "Start the backend's Python once and report whether it can run Mirage"

    def execute(self, context):
        try:
            python = runner.backend_python(python_pref(context))
        except runner.BackendError as e:
            _status.update(ok=False, text=str(e))
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        ok, text = runner.check(python)
        _status.update(ok=ok, text=text)
        self.report({"INFO"} if ok else {"ERROR"}, text)
        return {"FINISHED"} if ok else {"CANCELLED"}


class MiragePreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="Python interpreter with torch installed (for example a venv's bin/python)")
    torch_build: EnumProperty(
        name="Torch Build", default="AUTO",
        items=[("AUTO", "Auto", "CUDA when an NVIDIA GPU answers (nvidia-smi), else the CPU build"),
               ("CUDA", "CUDA", "The CUDA build of torch (NVIDIA GPUs; a larger download)"),
               ("CPU", "CPU", "The CPU build of torch")],
        description="Which build of torch Set Up Backend installs")
    wheel_folder: StringProperty(
        name="Wheel Folder", subtype="DIR_PATH",
        description="Install from this folder of wheels only, without network (pip download -r "
                    "backend/requirements.txt -d FOLDER, with the same Python version as Blender's)")
    env_folder: StringProperty(
        name="Environment Folder", subtype="DIR_PATH",
        description="Where Set Up Backend puts the environment (empty: the extension's folder in Blender's user "
                    "folder); a short path helps on Windows, where long paths can fail")
    stall_timeout: IntProperty(
        name="Stall Time-out (s)", default=300, min=0, soft_max=3600,
        description="Stop the backend when it sends nothing for this many seconds while running (0: wait forever); "
                    "finished segments are kept")

    def draw(self, context):
        col = self.layout.column()
        env = os.environ.get(runner.ENV_PYTHON)
        row = col.row()
        row.enabled = not env
        row.prop(self, "backend_python")
        if env:
            col.label(text=f"{runner.ENV_PYTHON} overrides this: {env}", icon="INFO")
        row = col.row()
        icon = "CHECKMARK" if _status["ok"] else ("ERROR" if _status["ok"] is False else "QUESTION")
        row.label(text=_status["text"], icon=icon)
        row.operator(MIRAGE_OT_check_backend.bl_idname, text="Check")
        col.prop(self, "stall_timeout")
        setup_ops.draw(col, context)


classes = (MIRAGE_OT_check_backend, MiragePreferences)
