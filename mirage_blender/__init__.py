"""Mirage: consistent camera flythroughs from a reference image, generated into the Sequencer."""
import bpy

from . import ops, prefs, props, render_farm, ui

_classes = prefs.classes + ops.classes + render_farm.classes + ui.classes


def register():
    props.register()
    for c in _classes:
        bpy.utils.register_class(c)


def unregister():
    for c in reversed(_classes):
        bpy.utils.unregister_class(c)
    props.unregister()
