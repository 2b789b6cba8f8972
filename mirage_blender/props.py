"""Settings saved in the .blend (scene.mirage) and run-time status (window_manager.mirage)."""
import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from . import models, reference


def _is_camera(self, ob):
    return ob.type == "CAMERA"


class MirageReference(bpy.types.PropertyGroup):
    """One more reference image of the set: a concept painting of it from another place, tied to the camera
    and frame it shows; on an object (Object.mirage_references), an image of that object alone (its concept art,
    a view of its turnaround sheet)."""
    image: StringProperty(name="Image", subtype="FILE_PATH",
                          description="The image: what this camera sees on this frame (concept art, photo or render)")
    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=_is_camera,
                            description="The camera the image was painted from")
    frame: IntProperty(name="Frame", default=1,
                       description="The frame it shows (where the camera and moving objects are); it may lie outside "
                                   "every shot: it then only seeds the set")
    depth_image: StringProperty(name="Depth Map", subtype="FILE_PATH",
                                description="Depth map of this image, in scene units (Depth set to Depth Map only)")


# what Bake to Materials puts in each object's texture (bake.py)
BAKE_MODES = [("LOOK", "Look", "What the flythrough shows, unlit (an emission): any engine shows what the frames "
                               "showed"),
              ("ALBEDO", "Albedo", "The colour without the still world's light, as the base colour, so the scene's "
                                   "own lamps light it (not available yet)")]


class MirageSettings(bpy.types.PropertyGroup):
    reference_source: EnumProperty(name="Reference From", default="FILE", items=reference.SOURCES,
                                   description="Where the reference image, what the camera sees on its frame, comes from")
    reference_datablock: PointerProperty(name="Image", type=bpy.types.Image,
                                         description="An image already in Blender (packed or not) as the reference")
    reference_frame: IntProperty(name="Render Frame", default=1,
                                 description="The scene frame rendered with the scene's engine (through its shot's "
                                             "camera) as the reference; the render settings are left as they were")
    reference_image: StringProperty(
        name="Reference", subtype="FILE_PATH",
        description="Image of the world as seen from the camera on the first frame (concept art, photo or render)")
    depth_source: EnumProperty(
        name="Depth", default="SCENE",
        items=[("SCENE", "Scene", "Exact depth of the scene's geometry on every frame"),
               ("IMAGE", "Depth Map", "A depth map of the reference image (same size as the render)"),
               ("MONOCULAR", "From Image", "Estimate the depth from the reference image itself (Depth Anything V2, "
                "a 0.1 GB download on first use); scaled by the scene's geometry where the first frame shows some, "
                "else by Distance"),
               ("PLANE", "Plane", "No geometry: assume a flat wall facing the first camera")])
    monocular_distance: FloatProperty(
        name="Distance", default=5.0, min=0.01, subtype="DISTANCE",
        description="How far away what the reference shows at its centre is (used when the first frame shows no "
                    "geometry of the scene)")
    depth_image: StringProperty(name="Depth Map", subtype="FILE_PATH",
                                description="Depth map of the reference image, in scene units (EXR or 16-bit PNG)")
    plane_distance: FloatProperty(name="Distance", default=5.0, min=0.01, subtype="DISTANCE",
                                  description="Distance of the assumed wall for the Plane depth source")
    # model: EnumProperty, made in register() from the models folder (models.menu_items)
    prompt: StringProperty(name="Prompt", default="",
                           description="What the world looks like, for diffusion models (Wan): style, place, light")
    negative_prompt: StringProperty(name="Negative Prompt", default="blurry, low quality, distorted, static, subtitles",
                                    description="What diffusion models (Wan) should avoid")
    segment_length: IntProperty(name="Segment Length", default=16, min=1, soft_max=128,
                                description="Frames generated per segment; each finished segment lands in the Sequencer")
    seed: IntProperty(name="Seed", default=0, min=0, description="Same seed, same frames")
    device: EnumProperty(name="Device", default="AUTO",
                         items=[("AUTO", "Auto", "CUDA when the backend sees a GPU, else the CPU"),
                                ("CUDA", "CUDA", "NVIDIA GPU only; fail if there is none"),
                                ("CPU", "CPU", "Always the CPU")])
    write_mp4: BoolProperty(name="Write MP4", default=True,
                            description="When a shot is finished, also encode flythrough.mp4 (H.264, the scene's "
                                        "frame rate) from its frames into its folder; the render settings are not "
                                        "touched")
    output_dir: StringProperty(name="Output", subtype="DIR_PATH", default="//mirage/",
                               description="Folder for the frames, the job and the saved memory (one folder per "
                                           "shot, named after its marker)")
    shot_mode: EnumProperty(
        name="Shots", default="CHAINED",
        items=[("CHAINED", "Chained", "Each shot starts from the memory the shot before it left: what one shot "
                                      "invented, the next shows the same (shots run one after another)"),
               ("PARALLEL", "Parallel", "Every shot starts from the references alone, so a farm can make them at "
                                        "once; what each shot invents on its own may differ from shot to shot")])
    references: CollectionProperty(type=MirageReference, name="More References",
                                   description="More reference images of the set, each from its own camera and frame")
    references_index: IntProperty(default=0, options={"HIDDEN"})
    farm_shots: StringProperty(
        name="Shots for a Farm", get=lambda self: _farm_shots(self), options={"HIDDEN", "SKIP_SAVE"},
        description="The shots as a farm job needs them: JSON, [{name, frames}] in timeline order")
    bake_mode: EnumProperty(name="Bake", default="LOOK", items=BAKE_MODES,
                            description="What Bake to Materials puts in each object's texture")
    bake_size: EnumProperty(
        name="Texture Size", default="AUTO",
        items=[("AUTO", "Auto", "About what the flythrough saw of each object")]
        + [(str(n), f"{n} x {n}", f"{n} x {n} texels per object") for n in (256, 512, 1024, 2048, 4096)],
        description="Texels per side of each object's baked texture")
    bake_pack: BoolProperty(name="Pack Textures", default=True,
                            description="Pack the baked textures into the .blend (they are saved in the output folder "
                                        "either way)")


class MirageStatus(bpy.types.PropertyGroup):
    running: BoolProperty(default=False)
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    text: StringProperty(default="")


def _farm_shots(settings) -> str:
    """JSON list of {"name", "frames"} for the shots of the scene these settings belong to ("[]" when the
    markers cannot make shots): what the Flamenco job type reads at submission."""
    import json

    from . import shots
    from .core.errors import InputError
    scene = settings.id_data
    try:
        plan = shots.plan(scene, settings)
    except InputError:
        return "[]"
    return json.dumps([{"name": s.name, "frames": len(s.frames)} for s in plan.shots])


classes = (MirageReference, MirageSettings, MirageStatus)


def model_property() -> EnumProperty:
    """The Model menu: one item per model.json with a panel entry. Each item keeps its panel number, which
    is what a saved .blend stores, so a file keeps its model when models are added or reordered."""
    items = models.menu_items()
    names = [name for name, *_ in items]
    default = models.DEFAULT if models.DEFAULT in names else (names[0] if names else None)
    return EnumProperty(name="Model", items=items, **({"default": default} if default else {}))


def register():
    MirageSettings.__annotations__["model"] = model_property()
    for c in classes:
        bpy.utils.register_class(c)
    bpy.types.Scene.mirage = PointerProperty(type=MirageSettings)
    bpy.types.WindowManager.mirage = PointerProperty(type=MirageStatus)
    bpy.types.Object.mirage_dynamic = BoolProperty(
        name="Moving", default=False,
        description="Give this object its own memory even if it is not animated (Mirage finds animated, "
                    "constrained and parented objects that move by itself)")
    bpy.types.Object.mirage_references = CollectionProperty(
        type=MirageReference, name="References",
        description="Images of this object alone (concept art, the views of a turnaround sheet), each from its own "
                    "camera and frame: they paint its pixels before the set's references do")
    bpy.types.Object.mirage_references_index = IntProperty(default=0, options={"HIDDEN"})


def unregister():
    del bpy.types.Object.mirage_references_index
    del bpy.types.Object.mirage_references
    del bpy.types.Object.mirage_dynamic
    del bpy.types.WindowManager.mirage
    del bpy.types.Scene.mirage
    for c in reversed(classes):
        bpy.utils.unregister_class(c)
