"""Mirage: consistent camera flythroughs from a reference image, generated into the Sequencer."""
import bpy

from . import bake_ops, ops, prefs, props, render_farm, setup_ops, ui

_classes = prefs.classes + setup_ops.classes + ops.classes + bake_ops.classes + render_farm.classes + ui.classes


def register():
    props.register()
    for c in _classes:
        bpy.utils.register_class(c)


def unregister():
    setup_ops.unregister()
    for c in reversed(_classes):
        bpy.utils.unregister_class(c)
    props.unregister()
