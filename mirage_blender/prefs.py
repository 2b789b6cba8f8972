"""Add-on preferences: which Python runs the backend (torch stays out of Blender's own Python)."""
import os

import bpy
from bpy.props import IntProperty, StringProperty

from . import runner

# the last check's answer; checking imports torch in a subprocess, too slow to do on every redraw
_status = {"ok": None, "text": "Not checked yet"}


def get(context=None):
    addon = (context or bpy.context).preferences.addons.get(__package__)
    return addon.preferences if addon else None


def python_pref(context=None) -> str:
    p = get(context)
    return p.backend_python if p else ""


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


classes = (MIRAGE_OT_check_backend, MiragePreferences)
