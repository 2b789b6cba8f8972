"""A render-farm worker's Blender set-up, in a user folder of its own: the extension installed from the built zip
and enabled, saved in the user preferences (what a studio does once per worker).

  python worker_setup.py ZIP USER_FOLDER
"""
import os
import sys

os.environ["BLENDER_USER_RESOURCES"] = os.path.abspath(sys.argv[2])
import bpy  # noqa: E402  (reads BLENDER_USER_RESOURCES)

res = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
if res != {"FINISHED"} or not hasattr(bpy.types.Scene, "mirage"):
    raise SystemExit(f"installing {sys.argv[1]} failed: {res}")
bpy.ops.wm.save_userpref()
