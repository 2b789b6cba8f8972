"""The Mirage panel, in Properties > Output and in the 3D View's sidebar."""
import bpy

from . import models, ops
from .gather.geometry import SURFACE_TYPES


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
        if context.scene.camera is None:
            layout.label(text="The scene has no camera", icon="ERROR")
        if running:
            layout.progress(factor=st.progress, type="BAR", text=st.text or "Working")
            layout.operator(ops.MIRAGE_OT_cancel.bl_idname, icon="CANCEL")
        else:
            layout.operator_context = "INVOKE_DEFAULT"
            layout.operator(ops.MIRAGE_OT_generate.bl_idname, icon="RENDER_ANIMATION")
            if st.text:
                layout.label(text=st.text)


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
        self.layout.use_property_split = True
        self.layout.prop(context.object, "mirage_dynamic")


classes = (MIRAGE_PT_output, MIRAGE_PT_sidebar, MIRAGE_PT_object)
