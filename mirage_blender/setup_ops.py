"""Set Up Backend, Cancel and Remove in the add-on's preferences, and the set-up's progress in the status bar.

The work is setup.Install (no bpy): on a thread polled by a timer in the UI, synchronously under `blender -b`
or from a script's `bpy.ops.mirage.install_backend()` (then a failure raises, with one line).
"""
import os
import sys

import bpy

from . import setup

# the install running or last finished in this Blender session
_install = {"job": None}
# the last check's answer, shown in the preferences (the install's check, or the Check button's)
status = {"ok": None, "text": "Not checked yet"}
POLL_S = 0.25


def addon_prefs(context=None):
    addon = (context or bpy.context).preferences.addons.get(__package__)
    return addon.preferences if addon else None


def set_status(ok, text: str) -> None:
    status.update(ok=ok, text=text)


def env_base(context=None) -> str:
    """The folder that holds the environment ('venv') and the set-up's log: the Environment Folder preference,
    else the extension's own folder in Blender's user folder."""
    p = addon_prefs(context)
    if p is not None and p.env_folder.strip():
        return os.path.abspath(bpy.path.abspath(p.env_folder.strip()))
    try:
        return bpy.utils.extension_path_user(__package__, create=True)
    except ValueError:  # loaded as a legacy add-on, not as an extension: Blender's user data folder then
        return bpy.utils.user_resource("DATAFILES", path="mirage_blender", create=True)


def env_dir(context=None) -> str:
    return os.path.join(env_base(context), "venv")


def running():
    job = _install["job"]
    return job if job is not None and job.state.running else None


def _new_install(context) -> setup.Install:
    p = addon_prefs(context)
    return setup.Install(env_dir(context), sys.executable, build=setup.torch_build(p.torch_build if p else "AUTO"),
                         wheel_folder=bpy.path.abspath(p.wheel_folder.strip()) if p and p.wheel_folder.strip() else "",
                         online=bpy.app.online_access, log_path=os.path.join(env_base(context), "setup.log"))


def _adopt(context, job):
    """Backend Python points at the new environment (MIRAGE_BACKEND_PYTHON still wins at run time)."""
    p = addon_prefs(context)
    if p is not None:
        p.backend_python = setup.env_python(job.env_dir)
    set_status(True, job.state.result)


def _redraw():
    wm = bpy.context.window_manager
    for window in wm.windows if wm else ():
        for area in window.screen.areas:
            if area.type in {"PREFERENCES", "STATUSBAR"}:
                area.tag_redraw()


def _poll():
    """Timer: redraw the progress; when the install ends, adopt it or show why not."""
    job = _install["job"]
    _redraw()
    if job is None or job.alive:
        return POLL_S
    if job.state.error:
        set_status(False, job.state.error)
    else:
        _adopt(bpy.context, job)
    bpy.types.STATUSBAR_HT_header.remove(draw_status)
    _redraw()
    return None


def draw_status(self, context):
    job = running()
    if job is not None:
        row = self.layout.row()
        row.progress(factor=job.state.fraction, type="BAR", text="Mirage: " + job.state.text())
        row.operator(MIRAGE_OT_cancel_install.bl_idname, text="", icon="CANCEL")


class MIRAGE_OT_install_backend(bpy.types.Operator):
    bl_idname = "mirage.install_backend"
    bl_label = "Set Up Backend"
    bl_description = ("Create a private Python environment for the backend and install torch and the backend's "
                      "packages into it (a download of about 1 to 3 GB)")

    def _begin(self, context):
        """A new install, or None (reported) while one runs or when the settings are wrong."""
        if (job := running()) is not None:
            self.report({"ERROR"}, f"Set Up Backend is already running: {job.state.text()}")
            return None
        try:
            _install["job"] = _new_install(context)
        except setup.SetupError as e:
            self.report({"ERROR"}, str(e))
            return None
        return _install["job"]

    def execute(self, context):
        # scripts and `blender -b`: synchronous; a failure is one line and the operator fails
        if (job := self._begin(context)) is None:
            return {"CANCELLED"}
        try:
            job.run()
        except setup.SetupError as e:
            set_status(False, str(e))
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        _adopt(context, job)
        self.report({"INFO"}, job.state.result)
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        if (job := self._begin(context)) is None:
            return {"CANCELLED"}
        job.start()
        bpy.types.STATUSBAR_HT_header.append(draw_status)
        bpy.app.timers.register(_poll, first_interval=POLL_S)
        self.report({"INFO"}, f"Setting up the backend in {job.env_dir} (log: {job.log_path})")
        return {"FINISHED"}


class MIRAGE_OT_cancel_install(bpy.types.Operator):
    bl_idname = "mirage.cancel_install"
    bl_label = "Cancel Set-Up"
    bl_description = "Stop setting up the backend; an environment that worked before stays as it was"

    @classmethod
    def poll(cls, context):
        return running() is not None

    def execute(self, context):
        running().cancel()
        return {"FINISHED"}


class MIRAGE_OT_remove_backend(bpy.types.Operator):
    bl_idname = "mirage.remove_backend"
    bl_label = "Remove Backend"
    bl_description = "Delete the backend's private Python environment"

    def execute(self, context):
        if running() is not None:
            self.report({"ERROR"}, "Set Up Backend is running: cancel it first")
            return {"CANCELLED"}
        folder = env_dir(context)
        try:
            setup.remove(folder)
        except OSError as e:
            self.report({"ERROR"}, f"Cannot remove {folder}: {e.strerror or e}")
            return {"CANCELLED"}
        p = addon_prefs(context)
        if p is not None and os.path.abspath(p.backend_python or "") == setup.env_python(folder):
            p.backend_python = ""
        set_status(None, "Not set up")
        self.report({"INFO"}, f"Removed {folder}")
        return {"FINISHED"}


def draw(layout, context):
    """The set-up's part of the preferences."""
    box = layout.box()
    job = running()
    folder = env_dir(context)
    if job is not None:
        box.label(text=f"Setting up the backend in {job.env_dir}")
        row = box.row()
        row.progress(factor=job.state.fraction, type="BAR", text=job.state.text())
        row.operator(MIRAGE_OT_cancel_install.bl_idname, text="Cancel", icon="CANCEL")
        box.label(text=f"Log: {job.log_path}")
        return
    installed = os.path.isfile(setup.env_python(folder))
    row = box.row()
    row.operator(MIRAGE_OT_install_backend.bl_idname, text="Repair Backend" if installed else "Set Up Backend",
                 icon="FILE_REFRESH" if installed else "IMPORT")
    sub = row.row()
    sub.enabled = installed
    sub.operator(MIRAGE_OT_remove_backend.bl_idname, text="Remove", icon="TRASH")
    box.label(text=f"Environment: {folder}" if installed else "The backend is not set up yet")
    last = _install["job"]
    if last is not None and last.state.error:
        box.label(text=last.state.error, icon="ERROR")
    elif last is not None and last.state.result:
        box.label(text=last.state.result, icon="CHECKMARK")
    p = addon_prefs(context)
    if p is not None:
        col = box.column()
        col.prop(p, "torch_build")
        col.prop(p, "wheel_folder")
        col.prop(p, "env_folder")
    if not bpy.app.online_access:
        box.label(text="Online access is off: Set Up Backend needs a Wheel Folder, or allow it in System > Network",
                  icon="INFO")


classes = (MIRAGE_OT_install_backend, MIRAGE_OT_cancel_install, MIRAGE_OT_remove_backend)


def unregister() -> None:
    """Disabling the add-on mid-install: stop the install, drop its timer and status bar entry."""
    job = running()
    if job is not None:
        job.cancel()
    if bpy.app.timers.is_registered(_poll):
        bpy.app.timers.unregister(_poll)
    try:
        bpy.types.STATUSBAR_HT_header.remove(draw_status)
    except (ValueError, AttributeError):
        pass
