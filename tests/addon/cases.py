"""Many Generate cases in ONE bpy session (starting bpy and installing the extension costs seconds).

  python cases.py ZIP OUT_DIR CASES.json RESULT.json

CASES.json is a list of {"name", "setup", "arg"}. For each case the same saved base scene is opened
again, `setup` applies one (usually bad) setting, and bpy.ops.mirage.generate() runs inside
try/except RuntimeError exactly as a script would call it. RESULT.json gets, per case: the error line,
the scene's state before and after Generate, the status text, the backend messages and notices.
"""
import json
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from scenario import scene_state  # noqa: E402  (imports tools/scenes, which isolates Blender's user folder)
import scenes  # noqa: E402
import bpy  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

PKG = "bl_ext.user_default.mirage_blender"
W, H = 64, 36


def settings_state(scene):
    s = scene.mirage
    cam = scene.camera
    return {"camera": cam.name if cam else None, "camera_type": cam.data.type if cam and cam.type == "CAMERA" else None,
            "resolution": [scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage],
            "settings": {k: getattr(s, k) for k in ("reference_image", "depth_source", "depth_image", "segment_length",
                                                      "device", "output_dir", "seed", "model", "reference_source",
                                                      "reference_frame")},
            "reference_datablock": s.reference_datablock.name if s.reference_datablock else None,
            "render": render_state(scene)}


def render_state(scene):
    """The user's render settings that rendering a reference frame touches."""
    r = scene.render
    fmt = r.image_settings
    return {"engine": r.engine, "filepath": r.filepath, "use_sequencer": r.use_sequencer,
            "format": [getattr(fmt, k) for k in ("media_type", "file_format", "color_mode", "color_depth")
                       if hasattr(fmt, k)]}


def write_exr(path, depth):
    """A float depth map the way a user would bring one: single channel in R, saved as OpenEXR."""
    h, w = depth.shape
    img = bpy.data.images.new("depth_fixture", w, h, float_buffer=True, is_data=True)
    px = np.zeros((h, w, 4), np.float32)
    px[..., 0] = depth[::-1]  # Blender stores rows bottom-up
    px[..., 3] = 1
    img.pixels.foreach_set(px.ravel())
    img.filepath_raw = path
    img.file_format = "OPEN_EXR"
    img.save()
    bpy.data.images.remove(img)


def fixtures(out):
    f = {}
    rng = np.random.default_rng(0)
    f["ref"] = os.path.join(out, "reference.png")
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(f["ref"])
    f["square"] = os.path.join(out, "square.png")
    Image.fromarray(rng.integers(0, 255, (W, W, 3), dtype=np.uint8)).save(f["square"])
    f["corrupt"] = os.path.join(out, "corrupt.png")
    with open(f["corrupt"], "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n this is not an image")
    f["empty"] = os.path.join(out, "empty.png")
    open(f["empty"], "wb").close()
    f["folder"] = os.path.join(out, "a_folder.png")
    os.makedirs(f["folder"], exist_ok=True)
    f["plain_file"] = os.path.join(out, "plain_file")
    with open(f["plain_file"], "w") as fh:
        fh.write("not a folder")
    good = np.full((H, W), 4.0, np.float32)
    for name, d in (("depth_ok", good), ("depth_small", np.full((H // 2, W // 2), 4.0, np.float32)),
                    ("depth_nan", np.where(np.arange(W) < 5, np.nan, good)),
                    ("depth_negative", np.where(np.arange(W) < 5, -1.0, good)),
                    ("depth_zero", np.zeros((H, W), np.float32))):
        f[name] = os.path.join(out, name + ".exr")
        write_exr(f[name], d.astype(np.float32))
    scripts = {
        "proto99": "#!/bin/sh\necho '{\"type\":\"hello\",\"protocol\":99,\"device\":\"cpu\",\"model\":\"x\"}'\nexec sleep 30\n",
        "crash": "#!/bin/sh\necho 'Segmentation fault in libfoo' >&2\nexit 7\n",
        "silent": "#!/bin/sh\nexec sleep 30\n",
    }
    for name, text in scripts.items():
        f[name] = os.path.join(out, name + ".sh")
        with open(f[name], "w") as fh:
            fh.write(text)
        os.chmod(f[name], 0o755)
    return f


def addon_prefs():
    return bpy.context.preferences.addons[PKG].preferences


def apply(case, scene, fx, out):
    """Make the scene bad in exactly one way. Returns a function that undoes changes outside the .blend."""
    name, arg = case["setup"], case.get("arg")
    s = scene.mirage
    undo = []
    env = os.environ.copy()
    undo.append(lambda: (os.environ.clear(), os.environ.update(env)))
    if name == "none":
        pass
    elif name == "no_camera":
        scene.camera = None
    elif name == "camera_is_mesh":
        scene.camera = bpy.data.objects["Wall_back"] if "Wall_back" in bpy.data.objects else \
            next(o for o in scene.objects if o.type == "MESH")
    elif name == "lens_type":
        scene.camera.data.type = arg
    elif name == "still_camera":
        scene.camera.animation_data_clear()
    elif name == "nan_camera":
        scene.camera.animation_data_clear()
        scene.camera.location.x = float("nan")
    elif name == "zero_scale_camera":
        scene.camera.scale = (0.0, 0.0, 0.0)
    elif name == "mirrored_camera":
        scene.camera.scale = (-1.0, 1.0, 1.0)
    elif name == "reference":
        s.reference_image = fx[arg] if arg in fx else (os.path.join(out, arg) if arg else "")
    elif name == "depth_map":
        s.depth_source = "IMAGE"
        s.depth_image = fx[arg] if arg in fx else (os.path.join(out, arg) if arg else "")
    elif name == "percentage":
        scene.render.resolution_percentage = arg
    elif name == "resolution":
        scene.render.resolution_x, scene.render.resolution_y = arg
        s.reference_image = ""  # the resolution must be refused before the reference is even looked at
    elif name == "segment_length":
        s.segment_length = arg
    elif name == "output":
        s.output_dir = os.path.join(fx[arg[0]], *arg[1:])
    elif name == "device":
        s.device = arg
    elif name == "python":
        os.environ["MIRAGE_BACKEND_PYTHON"] = fx.get(arg, arg)
    elif name in ("sigstop", "resume"):
        # 24 one-frame segments; "sigstop" freezes the real backend after its first segment, "resume"
        # (run next, same job) must continue that partial run
        # (the preference's wiring is checked by "stall_timeout"; here the time-out is shortened only once
        # the backend is frozen, so a slow torch import on a busy machine cannot trip it first)
        scene.frame_end = 24
        s.segment_length = 1
    elif name == "reference_datablock":
        s.reference_source = "IMAGE"
        s.output_dir = os.path.join(out, case["name"])
        if arg == "packed":  # packed, then its file deleted: only the packed bytes are left
            copy = os.path.join(out, "to_pack.png")
            with open(fx["ref"], "rb") as src, open(copy, "wb") as dst:
                dst.write(src.read())
            img = bpy.data.images.load(copy)
            img.pack()
            os.remove(copy)
        elif arg == "file":
            img = bpy.data.images.load(fx["ref"])
        elif arg == "painted":  # made in Blender, never saved: only its pixels
            img = bpy.data.images.new("Painted", W, H)
            px = np.zeros((H, W, 4), np.float32)
            px[..., 0] = np.linspace(0, 1, W)[None, :]
            px[..., 3] = 1
            img.pixels.foreach_set(px.ravel())
        elif arg == "missing_file":
            img = bpy.data.images.load(fx["ref"])
            img.filepath = os.path.join(out, "gone.png")
            img.reload()
        else:
            img = None
        s.reference_datablock = img
    elif name == "reference_render":
        s.reference_source = "RENDER"
        s.reference_frame = arg
        s.output_dir = os.path.join(out, case["name"])
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = 2
        scene.render.filepath = "//my_renders/shot_"
        scene.render.image_settings.file_format = "JPEG"
    elif name == "monocular":
        s.depth_source = "MONOCULAR"
        s.output_dir = os.path.join(out, case["name"])
    elif name == "stall_timeout":
        os.environ["MIRAGE_BACKEND_PYTHON"] = fx["silent"]
        p = addon_prefs()
        old = p.stall_timeout
        p.stall_timeout = arg
        undo.append(lambda: setattr(addon_prefs(), "stall_timeout", old))
    else:
        raise SystemExit(f"unknown setup {name}")
    return lambda: [u() for u in undo]


def main():
    zip_path, out, cases_path, result_path = sys.argv[1:5]
    with open(cases_path) as f:
        cases = json.load(f)
    scenes.install_extension(zip_path)
    os.makedirs(out, exist_ok=True)
    fx = fixtures(out)
    scene = scenes.build_room(width=W, height=H, frames=3)
    s = scene.mirage
    s.reference_image = fx["ref"]
    s.output_dir = os.path.join(out, "mirage")
    s.segment_length = 2
    s.device = "CPU"
    scene.frame_set(2)
    base = os.path.join(out, "base.blend")
    bpy.ops.wm.save_as_mainfile(filepath=base)

    import importlib
    session_mod = importlib.import_module(PKG + ".session")
    seen = {"messages": [], "notices": []}
    orig_handle, orig_close = session_mod.Session.handle, session_mod.Session.close

    def handle(self, msg):
        seen["messages"].append(msg)
        result = orig_handle(self, msg)
        if seen.get("sigstop") and msg["type"] == "segment_done" and self.backend.proc.poll() is None:
            seen["sigstop"] = False
            seen["stopped_pid"] = self.backend.proc.pid
            os.kill(self.backend.proc.pid, signal.SIGSTOP)
            self.stall_timeout = seen["sigstop_timeout"]
        return result

    def close(self):
        seen["notices"] = list(self.notices)
        result = orig_close(self)
        seen["backend_alive_after_close"] = self.backend is not None and self.backend.proc.poll() is None
        return result

    session_mod.Session.handle, session_mod.Session.close = handle, close

    results = []
    for case in cases:
        bpy.ops.wm.open_mainfile(filepath=base)
        scene = bpy.context.scene
        seen.update(messages=[], notices=[], backend_alive_after_close=None, stopped_pid=None,
                    sigstop=case["setup"] == "sigstop", sigstop_timeout=case.get("arg"))
        undo = apply(case, scene, fx, out)
        before = {**scene_state(scene), **settings_state(scene)}
        t0 = time.perf_counter()
        error = None
        try:
            bpy.ops.mirage.generate()
        except RuntimeError as e:
            error = str(e)
        except Exception:
            error = "UNEXPECTED " + traceback.format_exc()
        finally:
            seconds = time.perf_counter() - t0
            undo()
        scene = bpy.context.scene
        results.append({"name": case["name"], "error": error, "seconds": round(seconds, 3),
                        "before": before, "after": {**scene_state(scene), **settings_state(scene)},
                        "status": bpy.context.window_manager.mirage.text,
                        "messages": [m["type"] for m in seen["messages"]], "notices": seen["notices"],
                        "backend_alive_after_close": seen["backend_alive_after_close"],
                        "stopped_pid_exists": bool(seen["stopped_pid"]) and os.path.exists(f"/proc/{seen['stopped_pid']}"),
                        "resumed": sum(1 for m in seen["messages"] if m["type"] == "segment_done" and m.get("resumed"))})
        with open(result_path, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    scenes.run_script(main)
