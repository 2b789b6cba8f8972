"""Generate and Cancel, and the references of the set and of its objects. The operators see the generation's state
only; it does the work."""
import bpy
from bpy.props import IntProperty, StringProperty

from . import prefs
from .core.errors import ExportError, InputError
from .gather.geometry import SURFACE_TYPES
from .generation import Generation
from .runner import BackendError

USER_ERRORS = (ExportError, BackendError, InputError, OSError)
# the running session, so the Cancel button (another operator) can reach it
_active = {"session": None}


def _set_status(context, session):
    st = context.window_manager.mirage
    st.running = not session.ended
    st.progress = session.progress
    st.text = session.error or session.status


def _message(e):
    if isinstance(e, OSError) and not isinstance(e, (ExportError, BackendError, InputError)):
        return f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
    return str(e)


def _generation(context, op) -> Generation:
    return Generation(context, prefs.python_pref(context), prefs.stall_timeout(context), op.shot, op.shot_number,
                      log=(lambda line: print(line, flush=True)) if bpy.app.background else None)


class MIRAGE_OT_generate(bpy.types.Operator):
    bl_idname = "mirage.generate"
    bl_label = "Generate Flythrough"
    bl_description = ("Generate the flythrough of every shot (the scene's camera markers; without them the whole "
                      "range) into the Video Sequence Editor")

    shot: StringProperty(name="Shot", default="", options={"SKIP_SAVE"},
                         description="The one shot to generate, by its marker's name (empty: every shot)")
    shot_number: IntProperty(name="Shot Number", default=0, min=0, options={"SKIP_SAVE"},
                             description="The one shot to generate, by its place in timeline order (1 is the first; "
                                         "0: every shot)")

    _timer = None
    _session = None

    @classmethod
    def poll(cls, context):
        return _active["session"] is None and context.scene is not None

    def _finish(self, context, session):
        for n in session.notices:
            self.report({"WARNING"}, n)
        if session.error:
            self.report({"ERROR"}, session.error)
            return {"CANCELLED"}
        if session.cancelled:
            self.report({"WARNING"}, f"Cancelled: {session.segments_in_vse} finished segment(s) kept in the Sequencer")
            return {"CANCELLED"}
        self.report({"INFO"}, session.status)
        return {"FINISHED"}

    def execute(self, context):
        # synchronous: scripts and `blender -b`, where timers and modal handlers never run
        session = _generation(context, self)
        _active["session"] = session
        try:
            session.run_blocking()
        except USER_ERRORS as e:
            session.fail(_message(e))
        finally:
            _active["session"] = None
            _set_status(context, session)
        return self._finish(context, session)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        self._session = _generation(context, self)
        _active["session"] = self._session
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
            session.tick()  # a few export steps, then Blender breathes; or the backend's messages
        except USER_ERRORS as e:
            session.fail(_message(e))
        _set_status(context, session)
        context.window_manager.progress_update(session.progress)
        for area in context.screen.areas if context.screen else ():
            if area.type in {"PROPERTIES", "VIEW_3D", "SEQUENCE_EDITOR"}:
                area.tag_redraw()
        if not session.ended:
            return {"RUNNING_MODAL"}
        return self._end(context)

    def _end(self, context):
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        self._session.close()  # stopped while exporting: puts the user's current frame back
        _active["session"] = None
        _set_status(context, self._session)
        return self._finish(context, self._session)

    def cancel(self, context):
        # Blender is closing the operator (file load, quit): never leave the backend running
        if self._session is not None:
            self._session.cancel()
            self._end(context)


class MIRAGE_OT_cancel(bpy.types.Operator):
    bl_idname = "mirage.cancel"
    bl_label = "Cancel"
    bl_description = "Stop generating; finished segments stay in the Sequencer"

    @classmethod
    def poll(cls, context):
        return _active["session"] is not None

    def execute(self, context):
        _active["session"].cancel()
        return {"FINISHED"}


class MIRAGE_OT_reference_add(bpy.types.Operator):
    bl_idname = "mirage.reference_add"
    bl_label = "Add Reference"
    bl_description = "Add a reference image of the set, painted from a camera on a frame (the scene camera, this frame)"
    bl_options = {"UNDO"}

    def execute(self, context):
        scene = context.scene
        item = scene.mirage.references.add()
        item.camera = scene.camera
        item.frame = scene.frame_current
        scene.mirage.references_index = len(scene.mirage.references) - 1
        return {"FINISHED"}


class MIRAGE_OT_reference_remove(bpy.types.Operator):
    bl_idname = "mirage.reference_remove"
    bl_label = "Remove Reference"
    bl_description = "Remove the selected reference image (the file stays)"
    bl_options = {"UNDO"}

    @classmethod
    def poll(cls, context):
        return len(context.scene.mirage.references) > 0

    def execute(self, context):
        s = context.scene.mirage
        s.references.remove(min(s.references_index, len(s.references) - 1))
        s.references_index = max(0, min(s.references_index, len(s.references) - 1))
        return {"FINISHED"}


def _with_surfaces(context) -> bool:
    ob = context.object
    return ob is not None and ob.type in SURFACE_TYPES


class MIRAGE_OT_object_reference_add(bpy.types.Operator):
    bl_idname = "mirage.object_reference_add"
    bl_label = "Add Object Reference"
    bl_description = ("Add an image of this object alone (concept art, a view of a turnaround sheet), painted from a "
                      "camera on a frame (the scene camera, this frame)")
    bl_options = {"UNDO"}

    @classmethod
    def poll(cls, context):
        return _with_surfaces(context)

    def execute(self, context):
        ob, scene = context.object, context.scene
        item = ob.mirage_references.add()
        item.camera = scene.camera
        item.frame = scene.frame_current
        ob.mirage_references_index = len(ob.mirage_references) - 1
        return {"FINISHED"}


class MIRAGE_OT_object_reference_remove(bpy.types.Operator):
    bl_idname = "mirage.object_reference_remove"
    bl_label = "Remove Object Reference"
    bl_description = "Remove the selected reference of this object (the file stays)"
    bl_options = {"UNDO"}

    @classmethod
    def poll(cls, context):
        return _with_surfaces(context) and len(context.object.mirage_references) > 0

    def execute(self, context):
        ob = context.object
        ob.mirage_references.remove(min(ob.mirage_references_index, len(ob.mirage_references) - 1))
        ob.mirage_references_index = max(0, min(ob.mirage_references_index, len(ob.mirage_references) - 1))
        return {"FINISHED"}


classes = (MIRAGE_OT_generate, MIRAGE_OT_cancel, MIRAGE_OT_reference_add, MIRAGE_OT_reference_remove,
           MIRAGE_OT_object_reference_add, MIRAGE_OT_object_reference_remove)
