"""The Mirage panel, in Properties > Output and in the 3D View's sidebar."""
import bpy

from . import bake_ops, models, ops, render_farm, shots
from .core.errors import InputError
from .gather.geometry import SURFACE_TYPES

STATE_ICONS = {shots.DONE: "CHECKMARK", shots.PARTIAL: "SEQ_STRIP_DUPLICATE", shots.NOT_STARTED: "DOT"}


class MIRAGE_UL_references(bpy.types.UIList):
    """The set's other reference images: image, camera and frame each."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.label(text=f"{index + 2}")
        row.prop(item, "image", text="")
        row.prop(item, "camera", text="")
        row.prop(item, "frame", text="")


class MIRAGE_UL_object_references(bpy.types.UIList):
    """An object's own reference images: image, camera and frame each."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.label(text=f"{index + 1}")
        row.prop(item, "image", text="")
        row.prop(item, "camera", text="")
        row.prop(item, "frame", text="")


def draw_shots(layout, context, running):
    """The scene's shots with their state and a Generate button each, or the line saying why there are none."""
    scene = context.scene
    try:
        plan = shots.plan(scene, scene.mirage)
    except InputError as e:
        layout.label(text=str(e), icon="ERROR")
        return
    if not plan.has_markers:
        layout.label(text="One shot: the whole range (camera markers start shots)", icon="INFO")
        return
    col = layout.column(align=True)
    col.enabled = not running
    for shot in plan.shots:
        state = shots.state(shot)
        row = col.row(align=True)
        row.label(text=f"{shot.name}  {shot.frames[0]}-{shot.frames[-1]}  {getattr(shot.camera, 'name', '?')}",
                  icon=STATE_ICONS[state])
        row.label(text=state)
        op = row.operator(ops.MIRAGE_OT_generate.bl_idname, text="", icon="RENDER_ANIMATION")
        op.shot = shot.name


def draw_bake(layout, s):
    """Bake to Materials: the finished run's memory into every mesh's own texture and a new material."""
    box = layout.box()
    box.label(text="Bake to Materials")
    box.prop(s, "bake_mode")
    box.prop(s, "bake_size")
    box.prop(s, "bake_pack")
    op = box.operator(bake_ops.MIRAGE_OT_bake_memory.bl_idname, icon="TEXTURE")
    op.mode = s.bake_mode
    op.resolution = 0 if s.bake_size == "AUTO" else int(s.bake_size)
    op.pack = s.bake_pack


class MiragePanelMixin:
    bl_label = "Mirage Flythrough"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        s = context.scene.mirage
        st = context.window_manager.mirage
        running = ops._active["session"] is not None
        col = layout.column()
        col.enabled = not running
        col.prop(s, "reference_source")
        col.prop(s, {"FILE": "reference_image", "IMAGE": "reference_datablock",
                     "RENDER": "reference_frame"}[s.reference_source])
        col.prop(s, "depth_source")
        if s.depth_source == "IMAGE":
            col.prop(s, "depth_image")
        elif s.depth_source == "PLANE":
            col.prop(s, "plane_distance")
        elif s.depth_source == "MONOCULAR":
            col.prop(s, "monocular_distance")
        col.prop(s, "model")
        if models.needs(s.model)["prompt"]:
            col.prop(s, "prompt")
            col.prop(s, "negative_prompt")
        col.prop(s, "segment_length")
        col.prop(s, "seed")
        col.prop(s, "device")
        col.prop(s, "output_dir")
        col.prop(s, "write_mp4")
        col.prop(s, "shot_mode")
        if context.scene.camera is None and not context.scene.timeline_markers:
            layout.label(text="The scene has no camera", icon="ERROR")
        box = layout.box()
        box.label(text="Shots")
        draw_shots(box, context, running)
        box = layout.box()
        box.label(text="More References")
        row = box.row()
        row.enabled = not running
        row.template_list("MIRAGE_UL_references", "", s, "references", s, "references_index", rows=2)
        side = row.column(align=True)
        side.operator(ops.MIRAGE_OT_reference_add.bl_idname, text="", icon="ADD")
        side.operator(ops.MIRAGE_OT_reference_remove.bl_idname, text="", icon="REMOVE")
        if s.depth_source == "IMAGE" and len(s.references):
            item = s.references[min(s.references_index, len(s.references) - 1)]
            box.prop(item, "depth_image")
        if running:
            layout.progress(factor=st.progress, type="BAR", text=st.text or "Working")
            layout.operator(ops.MIRAGE_OT_cancel.bl_idname, icon="CANCEL")
        else:
            layout.operator_context = "INVOKE_DEFAULT"
            layout.operator(ops.MIRAGE_OT_generate.bl_idname, icon="RENDER_ANIMATION")
            if st.text:
                layout.label(text=st.text)
            box = layout.box()
            box.label(text="Render Farm")
            row = box.row(align=True)
            row.operator(render_farm.MIRAGE_OT_write_openjd_job.bl_idname, icon="EXPORT")
            if render_farm.flamenco_present():
                row.operator(render_farm.MIRAGE_OT_submit_flamenco.bl_idname, icon="NETWORK_DRIVE")
            else:
                box.label(text="Submit to Flamenco: the Flamenco add-on is not enabled", icon="INFO")
            box.operator(render_farm.MIRAGE_OT_load_shots.bl_idname, icon="SEQUENCE")
            draw_bake(layout, s)


class MIRAGE_PT_output(MiragePanelMixin, bpy.types.Panel):
    bl_idname = "MIRAGE_PT_output"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "output"


class MIRAGE_PT_sidebar(MiragePanelMixin, bpy.types.Panel):
    bl_idname = "MIRAGE_PT_sidebar"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Mirage"


class MIRAGE_PT_object(bpy.types.Panel):
    bl_idname = "MIRAGE_PT_object"
    bl_label = "Mirage"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "object"
    bl_options = {"DEFAULT_CLOSED"}

    @classmethod
    def poll(cls, context):
        return context.object is not None and context.object.type in SURFACE_TYPES

    def draw(self, context):
        layout, ob = self.layout, context.object
        layout.use_property_split = True
        layout.prop(ob, "mirage_dynamic")
        box = layout.box()
        box.label(text="References")
        row = box.row()
        row.enabled = ops._active["session"] is None
        row.template_list("MIRAGE_UL_object_references", "", ob, "mirage_references", ob, "mirage_references_index",
                          rows=2)
        side = row.column(align=True)
        side.operator(ops.MIRAGE_OT_object_reference_add.bl_idname, text="", icon="ADD")
        side.operator(ops.MIRAGE_OT_object_reference_remove.bl_idname, text="", icon="REMOVE")
        if len(ob.mirage_references) and context.scene.mirage.depth_source != "SCENE":
            # they paint the object's pixels, which only the scene's geometry tells apart
            box.label(text="An object's references need Depth set to Scene", icon="ERROR")


classes = (MIRAGE_UL_references, MIRAGE_UL_object_references, MIRAGE_PT_output, MIRAGE_PT_sidebar,
           MIRAGE_PT_object)
