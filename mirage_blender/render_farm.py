"""Render farms from Blender: write the Open Job Description job bundle for the current .blend, submit it to a
Flamenco Manager through the Flamenco add-on, and load every shot's finished segments into the Sequencer (the
last task of a farm job). docs/farm.md says what the workers need."""
import os

import bpy
from bpy.props import StringProperty

from . import farmjob, shots, vse
from .core.errors import InputError

FLAMENCO_JOB_TYPE = "mirage"  # farm/flamenco/mirage.js in the Manager's scripts/ folder
# the job type and the OpenJD template ship with the extension (and are in its repository)
JOB_TYPE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "farm", "flamenco", "mirage.js")


def _saved_file() -> str:
    """The .blend a farm opens: saved, and as it is on screen."""
    if not bpy.data.filepath:
        raise InputError("Save the .blend first: a farm opens it from its file")
    if bpy.data.is_dirty and not bpy.app.background:  # headless, the file is what was opened (and saved)
        raise InputError("The .blend has unsaved changes: save it first (a farm opens the file, not what is on screen)")
    return bpy.data.filepath


def _checked_plan(scene):
    """The set as a farm would make it, refused (one line) where a shot could not start."""
    plan = shots.plan(scene, scene.mirage)
    if plan.fallback:
        raise InputError("The output folder is inside a temporary folder: set Output to a folder every worker reaches")
    return plan


def load_shots(scene) -> tuple[int, list]:
    """Every shot's finished segments into the scene's Sequencer, on one channel free of all but their own earlier
    strips, which they replace. Returns (segments loaded, labels of the shots not finished)."""
    plan = shots.plan(scene, scene.mirage)
    found = [(s, shots.finished_segments(s.folder)) for s in plan.shots]
    found = [(s, segs) for s, segs in found if segs]
    if not found:
        raise InputError(f"No shot has finished frames in {plan.root}: generate the shots first")
    channel = vse.free_channel(scene, min(s.frames[0] for s, _ in found), max(s.frames[-1] for s, _ in found),
                               {s.folder for s, _ in found})
    loaded = 0
    for shot, segments in found:
        vse.remove_previous(scene, shot.folder)
        for i, (first, files) in enumerate(segments):
            vse.add_segment(scene, f"{shot.label} {i + 1:03d}", shot.folder, files, first, channel)
            loaded += 1
    unfinished = [s.label for s in plan.shots if shots.state(s) != shots.DONE]
    return loaded, unfinished


class MIRAGE_OT_load_shots(bpy.types.Operator):
    bl_idname = "mirage.load_shots"
    bl_label = "Load Shots into Sequencer"
    bl_description = "Put every shot's finished segments (from their folders) into the Sequencer, replacing older ones"

    def execute(self, context):
        try:
            loaded, unfinished = load_shots(context.scene)
        except InputError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        if unfinished:
            self.report({"WARNING"}, f"Not finished: {', '.join(unfinished)}")
        self.report({"INFO"}, f"{loaded} segment(s) in the Sequencer")
        return {"FINISHED"}


class MIRAGE_OT_write_openjd_job(bpy.types.Operator):
    bl_idname = "mirage.write_openjd_job"
    bl_label = "Write OpenJD Job"
    bl_description = ("Write an Open Job Description job bundle for this .blend (one task per shot, then the "
                      "Sequencer): run it with openjd-cli, or submit it to AWS Deadline Cloud")

    directory: StringProperty(name="Folder", subtype="DIR_PATH", default="", options={"SKIP_SAVE"},
                              description="Where the bundle goes (empty: <output>/openjd-job/)")
    blender: StringProperty(name="Blender Executable", default="blender", options={"SKIP_SAVE"})
    backend_python: StringProperty(name="Backend Python", default="", options={"SKIP_SAVE"},
                                   description="The backend's Python on the workers (empty: each worker's own)")

    def execute(self, context):
        try:
            blend = _saved_file()
            plan = _checked_plan(context.scene)
        except InputError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        folder = bpy.path.abspath(self.directory) if self.directory else os.path.join(plan.root, "openjd-job")
        name = f"Mirage: {os.path.splitext(os.path.basename(blend))[0]}"
        template = farmjob.template([s.name for s in plan.shots], plan.mode, name)
        values = {"BlendFile": blend, "BlenderExecutable": self.blender, "BackendPython": self.backend_python}
        try:
            paths = farmjob.write_bundle(folder, template, values)
        except OSError as e:
            self.report({"ERROR"}, f"Cannot write the job bundle to {folder}: {e.strerror or e}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"OpenJD job for {len(plan.shots)} shot(s) written to {os.path.dirname(paths[0])}")
        return {"FINISHED"}


def flamenco_present() -> bool:
    """Whether the Flamenco add-on is enabled in this Blender."""
    return hasattr(bpy.types.Scene, "flamenco_job_type") and hasattr(bpy.types, "FLAMENCO_OT_submit_job")


class MIRAGE_OT_submit_flamenco(bpy.types.Operator):
    bl_idname = "mirage.submit_flamenco"
    bl_label = "Submit to Flamenco"
    bl_description = ("Submit every shot to the Flamenco Manager through the Flamenco add-on, with Mirage's job type "
                      "(farm/flamenco/mirage.js on the Manager)")

    def invoke(self, context, event):
        return self.execute(context)

    def execute(self, context):
        scene = context.scene
        try:
            if not flamenco_present():
                raise InputError("The Flamenco add-on is not enabled: install it from your Flamenco Manager's web "
                                 "interface (docs/farm.md)")
            _saved_file()
            _checked_plan(scene)
            try:
                scene.flamenco_job_type = FLAMENCO_JOB_TYPE
            except TypeError:
                raise InputError(f"The Flamenco Manager offers no Mirage job type: copy {JOB_TYPE_FILE} into its "
                                 f"scripts/ folder, then refresh the job types in Flamenco's panel") from None
        except InputError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        if not getattr(scene, "flamenco_job_name", ""):
            scene.flamenco_job_name = f"Mirage {os.path.splitext(os.path.basename(bpy.data.filepath))[0]}"
        # the Flamenco add-on packs the file and submits; our job type's settings are evaluated there
        return bpy.ops.flamenco.submit_job("INVOKE_DEFAULT", job_name=scene.flamenco_job_name)


classes = (MIRAGE_OT_load_shots, MIRAGE_OT_write_openjd_job, MIRAGE_OT_submit_flamenco)
