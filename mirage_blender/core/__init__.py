"""The add-on's core: what the export computes from plain data (camera maths, the rasteriser, light and
surface colour maps, the per-frame export value). numpy and the standard library only: it never imports
bpy, and imports nothing from outside this folder, so it runs and is tested without Blender."""
