"""Bake to Materials: the operator. Like Generate it runs the backend beside Blender (progress in the panel, Esc or
Cancel stops it) and synchronously under `blender -b`; the scene changes in its last step only, one undo step."""
import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import ops, prefs
from .bake import Bake
from .props import BAKE_MODES


def _bake(context, op) -> Bake:
    return Bake(context, prefs.python_pref(context), op.mode, op.resolution, op.pack, op.shot,
                prefs.stall_timeout(context))


class MIRAGE_OT_bake_memory(bpy.types.Operator):
    bl_idname = "mirage.bake_memory"
    bl_label = "Bake to Materials"
    bl_description = ("Bake what the finished flythrough's memory holds into every mesh's own texture, with a new "
                      "material each (the user's materials and UV maps stay as they are)")
    bl_options = {"REGISTER", "UNDO"}

    mode: EnumProperty(name="Bake", items=BAKE_MODES, default="LOOK",
                       description="What the textures hold")
    resolution: IntProperty(name="Texture Size", default=0, min=0, max=8192, options={"SKIP_SAVE"},
                            description="Texels per side of each object's texture (0: about what the flythrough saw)")
    pack: BoolProperty(name="Pack Textures", default=True, options={"SKIP_SAVE"},
                       description="Pack the textures into the .blend (off: only saved in the output folder)")
    shot: StringProperty(name="Shot", default="", options={"SKIP_SAVE"},
                         description="The shot whose run is baked (empty: the last shot, which holds the whole set "
                                     "with Chained shots)")

    _timer = None
    _session = None

    @classmethod
    def poll(cls, context):
        if ops._active["session"] is not None or context.scene is None:
            return False
        if context.mode != "OBJECT":
            cls.poll_message_set("Bake to Materials works in Object Mode")
            return False
        return True

    def _finish(self, context, session):
        for n in session.notices:
            self.report({"WARNING"}, n)
        if session.error:
            self.report({"ERROR"}, session.error)
            return {"CANCELLED"}
        if session.cancelled:
            self.report({"WARNING"}, "Bake cancelled: the scene is as it was")
            return {"CANCELLED"}
        self.report({"INFO"}, session.status)
        return {"FINISHED"}

    def execute(self, context):
        # synchronous: scripts and `blender -b`, where timers and modal handlers never run
        session = _bake(context, self)
        ops._active["session"] = session
        try:
            session.run_blocking()
        except ops.USER_ERRORS as e:
            session.fail(ops._message(e))
        finally:
            ops._active["session"] = None
            ops._set_status(context, session)
        return self._finish(context, session)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        self._session = _bake(context, self)
        ops._active["session"] = self._session
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 1)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        session = self._session
        if event.type == "ESC" and event.value == "PRESS" and not session.ended:
            session.cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            session.tick()
        except ops.USER_ERRORS as e:
            session.fail(ops._message(e))
        ops._set_status(context, session)
        context.window_manager.progress_update(session.progress)
        for area in context.screen.areas if context.screen else ():
            if area.type in {"PROPERTIES", "VIEW_3D"}:
                area.tag_redraw()
        if not session.ended:
            return {"RUNNING_MODAL"}
        return self._end(context)

    def _end(self, context):
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        self._session.close()
        ops._active["session"] = None
        ops._set_status(context, self._session)
        return self._finish(context, self._session)

    def cancel(self, context):
        if self._session is not None:
            self._session.cancel()
            self._end(context)


classes = (MIRAGE_OT_bake_memory,)
