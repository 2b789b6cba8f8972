"""References of one object (an actor's concept art, a view of its turnaround sheet): they paint that object's
pixels alone, before the set's references, so the object shows its own look and the set keeps its own content
everywhere else. Synthetic jobs (a wall and a box, tests/synth.py) through the backend as a real subprocess."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from backend import models, protocol
from backend.channels import Maps
from backend.memory import SceneMemory
from backend.step import make_view, seed
from tests.conftest import run_backend
from tests.synth import box_scene_depth, intrinsics, look_camera, make_job, texture
from tools.metrics import backward_warp

W, H = 64, 48
BOX, WALL = 1, 2  # the object map's numbers
RED, GREEN, BLUE = (220, 30, 30), (30, 220, 30), (30, 30, 220)
OBJECT_CAMERA = (0.1, 3.0)  # (x, yaw) of the box's own reference: a camera of no frame


def parts_and_depth(c2w):
    """The object map ([H, W] uint16: BOX, WALL, 0 for nothing) and the depth of a camera."""
    depth, hit = box_scene_depth(intrinsics(W, H), c2w, W, H, with_ids=True)
    return np.where(hit > 0, BOX, np.where(np.isfinite(depth), WALL, 0)).astype(np.uint16), depth


def is_colour(pixels, channel):
    """Which pixels [n, 3] are plainly of one primary colour (0 red, 1 green, 2 blue)."""
    p = pixels.astype(int)
    others = [c for c in range(3) if c != channel]
    return (p[:, channel] > 150) & (p[:, others[0]] < 90) & (p[:, others[1]] < 90)


def object_job(folder, model, of_the_box=True):
    """Frames past a red box before a wall whose texture has no blue (the set's reference, frame 1), and the box's
    own reference from another camera: the box green, everything else blue. With `of_the_box` that reference
    names the box; without, it is one more reference of the whole set."""
    path = make_job(folder, W=W, H=H, n=6, segment_length=3, model=model)
    with open(path) as f:
        job = json.load(f)
    os.makedirs(os.path.join(folder, "inputs", "parts"))
    for fr in job["frames"]:
        fr["parts"] = f"inputs/parts/{fr['frame']:06d}.npy"
        np.save(os.path.join(folder, fr["parts"]), parts_and_depth(np.array(fr["cam_to_world"]))[0])
    parts, _ = parts_and_depth(np.array(job["frames"][0]["cam_to_world"]))
    image = texture(W, H, 0)
    image[..., 2] = 128  # no plain blue anywhere on the set's wall
    image[parts == BOX] = RED
    Image.fromarray(image).save(os.path.join(folder, job["reference"]["image"]))
    c2w = look_camera(OBJECT_CAMERA[0], yaw_deg=OBJECT_CAMERA[1])
    parts, depth = parts_and_depth(c2w)
    os.makedirs(os.path.join(folder, "inputs", "references"))
    image = np.empty((H, W, 3), np.uint8)
    image[:] = BLUE
    image[parts == BOX] = GREEN
    view = {"image": "inputs/references/02.png", "frame": 1, "K": intrinsics(W, H).tolist(),
            "cam_to_world": c2w.tolist(), "depth": "inputs/references/02_depth.npy",
            "parts": "inputs/references/02_parts.npy"}
    Image.fromarray(image).save(os.path.join(folder, view["image"]))
    np.save(os.path.join(folder, view["depth"]), depth)
    np.save(os.path.join(folder, view["parts"]), parts)
    if of_the_box:
        view["object"] = "Box"
        job["parts"] = {"Box": BOX, "Wall": WALL}
    job["references"] = [view]
    with open(path, "w") as f:
        json.dump(job, f)
    return path, job


def frames_with_parts(folder, job):
    """(frame number, image [H, W, 3], object map, depth, cam_to_world) of every frame but the first (the set's
    reference's own frame, which is the user's image)."""
    out = []
    for fr in job["frames"][1:]:
        c2w = np.array(fr["cam_to_world"])
        image = np.asarray(Image.open(os.path.join(folder, "frames", protocol.frame_filename(fr["frame"]))))
        out.append((fr["frame"], image, *parts_and_depth(c2w), c2w))
    return out


@pytest.mark.parametrize("model", ["builtin", "patch"])
def test_a_reference_of_one_object_paints_that_object_alone(tmp_path, model):
    folder = str(tmp_path / "own")
    path, job = object_job(folder, model)
    proc, _ = run_backend(path)
    assert proc.returncode == 0, proc.stderr
    K = intrinsics(W, H)
    c2w_obj = look_camera(OBJECT_CAMERA[0], yaw_deg=OBJECT_CAMERA[1])
    parts_obj, depth_obj = parts_and_depth(c2w_obj)
    box_only = np.where(parts_obj == BOX, depth_obj, np.inf).astype(np.float32)  # the box as its reference shows it
    ref = np.asarray(Image.open(os.path.join(folder, "inputs", "reference.png")))
    checked = 0
    for n, image, parts, depth, c2w in frames_with_parts(folder, job):
        _, seen = backward_warp(np.zeros((H, W, 3)), box_only, K, c2w_obj, depth, K, c2w)
        own = seen & (parts == BOX)  # the box where its own reference shows it: its own colour, not the set's red
        assert own.sum() > 300, n
        assert is_colour(image[own], 1).mean() > 0.97, (n, is_colour(image[own], 0).mean())
        # the rest of that reference (the blue around the box) is stored nowhere and copied from nowhere
        wall = parts == WALL
        assert not is_colour(image[wall], 2).any(), (n, is_colour(image[wall], 2).sum())
        # the wall the set's reference shows is the set's
        warped, seen_set = backward_warp(ref / 255.0, parts_and_depth(look_camera(0.0))[1], K, look_camera(0.0),
                                         depth, K, c2w)
        both = wall & seen_set
        assert np.abs(image[both] / 255.0 - warped[both]).mean() < 0.08, n  # blue there would be about 0.3 off
        checked += 1
    assert checked == 5


def test_as_a_reference_of_the_set_the_same_image_loses_the_object_and_paints_the_wall(tmp_path):
    # the control: without `object`, the set's reference comes first and keeps the box red, and the blue of the
    # later reference shows on the wall the first never saw
    folder = str(tmp_path / "set")
    path, job = object_job(folder, "builtin", of_the_box=False)
    proc, _ = run_backend(path)
    assert proc.returncode == 0, proc.stderr
    frames = frames_with_parts(folder, job)
    assert all(is_colour(image[parts == BOX], 0).mean() > 0.9 for _, image, parts, _, _ in frames)
    assert sum(is_colour(image[parts == WALL], 2).sum() for _, image, parts, _, _ in frames) > 100


def test_seeding_with_a_pixel_mask_stores_those_pixels_and_nothing_else():
    model = models.load("patch")
    c = model.cell
    K = torch.tensor(intrinsics(W, H))
    c2w = look_camera(*OBJECT_CAMERA)
    parts, depth = parts_and_depth(c2w)
    view = make_view(K, torch.tensor(c2w), (H, W), c, 100.0,
                     Maps(depth=torch.from_numpy(depth), parts=torch.from_numpy(parts.astype(np.int64))))
    image = torch.rand(3, H, W, generator=torch.Generator().manual_seed(0))
    whole = SceneMemory(model.channels, c)
    assert seed(model, whole, image, view) > 0 and (whole.static.pos[:, 2] > 5).any()  # the wall too
    memory = SceneMemory(model.channels, c)
    box = view.maps.parts == BOX
    assert seed(model, memory, image, view, pixels=box) > 0
    bank = memory.static
    assert not memory.objects
    assert ((bank.pos[:, 2] > 2.9) & (bank.pos[:, 2] < 3.7)).all()  # all on the box (z 3 to 3.6), none on the wall
    # the pixels the stored cells own are exactly the box's
    owned = torch.zeros(H, W, dtype=torch.bool)
    for (row, col), bits in zip(bank.src.tolist(), bank.bits.tolist()):
        for p in range(c * c):
            if bits >> p & 1:
                owned[row * c + p // c, col * c + p % c] = True
    assert torch.equal(owned, box)


def test_bad_object_references_are_one_clear_line(tmp_path):
    path, good = object_job(str(tmp_path), "patch")
    parsed, _ = protocol.validate_job(good, str(tmp_path))
    assert parsed.parts == {"Box": BOX, "Wall": WALL} and parsed.references[1].object == "Box"
    assert parsed.references[0].object is None and parsed.reference == parsed.references[0]
    assert protocol.Job.from_dict(parsed.to_dict()) == parsed

    def ref(j, **change):
        j["references"][0].update(change)
    cases = [
        (lambda j: j.pop("parts"), "references[0].object 'Box' is not in the job's parts table"),
        (lambda j: ref(j, object="Crate"), "references[0].object 'Crate' is not in the job's parts table"),
        (lambda j: ref(j, object=3), "references[0].object must be the name of an object"),
        (lambda j: j.update(parts={"Box": 0}), "parts must give each object's name its number in the object maps"),
        (lambda j: j.update(parts={"Box": 1, "Wall": 1}), "parts gives 'Box' and 'Wall' the same number (1)"),
        (lambda j: j.update(parts=[1]), "job field 'parts' has the wrong type"),
        (lambda j: (j["references"][0].pop("parts"), [f.pop("parts") for f in j["frames"]]),
         "references[0] shows the object 'Box' alone and needs an object map ('parts')"),
        (lambda j: (j.update(depth_source="PLANE"), [f.pop("depth") for f in j["frames"]]),
         "references[0] shows the object 'Box' alone, which needs the Scene depth source"),
        (lambda j: j.pop("reference"),
         "the job has no reference of the whole set: every one of its references shows one object"),
    ]
    for change, message in cases:
        job = json.loads(json.dumps(good))
        change(job)
        with pytest.raises(protocol.JobError) as e:
            protocol.validate_job(job, str(tmp_path))
        assert str(e.value).startswith(message) and "\n" not in str(e.value), (str(e.value), message)
    # through the backend, the same line
    job = json.loads(json.dumps(good))
    job["references"][0]["object"] = "Crate"
    with open(path, "w") as f:
        json.dump(job, f)
    proc, msgs = run_backend(path, "--jsonl")
    errors = [m["message"] for m in msgs if m["type"] == "error"]
    assert proc.returncode == 1 and errors == ["references[0].object 'Crate' is not in the job's parts table"], errors
