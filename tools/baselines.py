"""Baseline memories for the bench. Each implements the segment loop's Memory protocol (backend.memory), so
it runs through the product's own loop: backend.pipeline.Run(..., memory=...). Torch only, no bpy; never shipped.

PointCloudMemory  Gen3C-style per-frame cache: every pixel of every written frame is kept as a world
                  point (xyz float32, 12 bytes) and a colour (rgb uint8, 3 bytes) = 15 bytes per pixel,
                  append-only. The loop works in latent space, so a write decodes the latent to pixels
                  with the model, and a read splats all points into the camera at pixel resolution
                  (nearest pixel, min-depth z-buffer, oldest point wins on a surface tie), fills
                  splat cracks by push-pull and encodes the image back to a latent. A latent cell is a
                  hole when more than half of its pixels got no point. Pixel depth is the exact scene
                  depth when a `depth_lookup` is bound (the bench binds the job's depth maps); otherwise
                  each pixel takes its cell's depth.
NoMemory          What a generator without a spatial memory sees: a LatentMemory that begin_segment()
                  empties down to the last frame of the previous segment.
Both keep static scenes only (no moving-object banks).
"""
import torch
from safetensors.torch import load_file, save_file

from backend.fill import push_pull
from backend.memory import SURFACE_TOL, LatentMemory, MemoryRead, cell_depth, zbuffer

NEAR = 1e-4


def _pad(t, H, W):
    """Replicate-pad the right/bottom edge of [..., h, w] up to H x W."""
    h, w = t.shape[-2:]
    if (h, w) == (H, W):
        return t
    x = t[None] if t.dim() == 3 else t[None, None]
    x = torch.nn.functional.pad(x.float(), (0, W - w, 0, H - h), mode="replicate")
    return x[0] if t.dim() == 3 else x[0, 0]


class PointCloudMemory:
    model = None
    depth_lookup = None  # (K, c2w) -> [H, W] exact pixel depth (inf = miss), or None

    @classmethod
    def bind(cls, model, depth_lookup=None):
        """A memory class for Run(memory=...) that decodes/encodes with `model`."""
        return type("BoundPointCloudMemory", (cls,), {"model": model, "depth_lookup": staticmethod(depth_lookup)
                                                       if depth_lookup else None})

    def __init__(self, channels, cell, dtype=torch.float16, device="cpu"):
        if self.model is None:
            raise TypeError("PointCloudMemory needs a model: use PointCloudMemory.bind(model)")
        self.channels, self.cell, self.dtype, self.device = int(channels), int(cell), dtype, torch.device(device)
        self.n = 0
        self.xyz = torch.zeros(1024, 3, dtype=torch.float32, device=self.device)  # capacity doubles
        self.rgb = torch.zeros(1024, 3, dtype=torch.uint8, device=self.device)
        self.frames = []  # points per written frame

    def __len__(self):
        return self.n

    def nbytes(self):
        """Bytes of the stored points: 12 (xyz float32) + 3 (rgb uint8) per point."""
        return self.n * (self.xyz.shape[1] * self.xyz.element_size() + self.rgb.shape[1] * self.rgb.element_size())

    def _append(self, xyz, rgb):
        need = self.n + xyz.shape[0]
        if need > self.xyz.shape[0]:
            cap = max(need, 2 * self.xyz.shape[0])
            self.xyz = torch.cat([self.xyz[:self.n], self.xyz.new_zeros(cap - self.n, 3)])
            self.rgb = torch.cat([self.rgb[:self.n], self.rgb.new_zeros(cap - self.n, 3)])
        self.xyz[self.n:need] = xyz
        self.rgb[self.n:need] = rgb
        self.frames.append(xyz.shape[0])
        self.n = need

    def write(self, latent, depth, K, cam_to_world, mask=None, ids=None, poses=None, maps=None):
        """Store every pixel of the frame with a valid depth (the mask is ignored: a per-frame cache keeps
        whole frames). Returns the number of points stored."""
        C, h, w = latent.shape
        if C != self.channels or tuple(depth.shape) != (h, w):
            raise ValueError(f"expected latent [{self.channels}, h, w] and depth [h, w], got "
                             f"{tuple(latent.shape)} and {tuple(depth.shape)}")
        H, W = h * self.cell, w * self.cell
        rgb = self.model.render(latent.to(self.device))[:, :H, :W].float().clamp(0, 1)
        cells = depth.to(self.device, torch.float64).repeat_interleave(self.cell, 0).repeat_interleave(self.cell, 1)
        d = cells
        if self.depth_lookup is not None:
            exact = self.depth_lookup(K, cam_to_world)
            if exact is not None:
                exact = _pad(torch.as_tensor(exact, dtype=torch.float64), H, W).to(self.device, torch.float64)
                d = torch.where(torch.isfinite(exact) & (exact > 0), exact, cells)
        ok = torch.isfinite(d) & (d > 0)
        v, u = torch.nonzero(ok, as_tuple=True)
        z = d[v, u]
        K = torch.as_tensor(K, dtype=torch.float64)
        cam = torch.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
        M = torch.as_tensor(cam_to_world, dtype=torch.float64, device=self.device)
        xyz = (cam @ M[:3, :3].T + M[:3, 3]).float()
        col = (rgb[:, v, u].T * 255.0 + 0.5).to(torch.uint8)
        self._append(xyz, col)
        return int(xyz.shape[0])

    def read(self, K, cam_to_world, h, w, poses=None, ids=None, splats=True, maps=None):
        """The point cloud seen from the camera, encoded back to a latent (MemoryRead without splats)."""
        H, W = h * self.cell, w * self.cell
        w2c = torch.linalg.inv(torch.as_tensor(cam_to_world, dtype=torch.float64)).float().to(self.device)
        K = torch.as_tensor(K, dtype=torch.float64)
        p = self.xyz[:self.n] @ w2c[:3, :3].T + w2c[:3, 3]
        z = p[:, 2]
        u = torch.round(float(K[0, 0]) * p[:, 0] / z + float(K[0, 2]))
        v = torch.round(float(K[1, 1]) * p[:, 1] / z + float(K[1, 2]))
        ok = (z > NEAR) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        idx = torch.nonzero(ok)[:, 0]
        target = v[idx].long() * W + u[idx].long()
        best = zbuffer(target, z[idx], H * W, None, SURFACE_TOL)  # ties: lowest index = oldest point
        hit = best < idx.numel()
        img = torch.zeros(3, H * W, dtype=torch.float32, device=self.device)
        img[:, hit] = self.rgb[idx[best[hit]]].T.float() / 255.0
        pdepth = torch.full((H * W,), float("inf"), device=self.device)
        pdepth[hit] = z[idx[best[hit]]]
        img, pdepth, pix_hole = img.reshape(3, H, W), pdepth.reshape(H, W), ~hit.reshape(H, W)
        if pix_hole.any():
            img = push_pull(img, pix_hole)
        latent = self.model.encode(img).to(self.dtype)
        depth = cell_depth(pdepth, self.cell)
        return MemoryRead(latent, ~torch.isfinite(depth), depth)

    def begin_segment(self):
        pass

    def save(self, path):
        save_file({"xyz": self.xyz[:self.n].contiguous().cpu(), "rgb": self.rgb[:self.n].contiguous().cpu(),
                   "frames": torch.tensor(self.frames, dtype=torch.int64)}, str(path),
                  metadata={"format": "point_cloud_memory", "channels": str(self.channels), "cell": str(self.cell)})

    @classmethod
    def load(cls, path, device="cpu", object_ids=()):
        t = load_file(str(path))
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        mem = cls(int(meta["channels"]), int(meta["cell"]), device=device)
        mem.frames = []
        mem.n = 0
        mem._append(t["xyz"].to(mem.device), t["rgb"].to(mem.device))
        mem.frames = [int(x) for x in t["frames"]]
        return mem


class NoMemory:
    """A LatentMemory that forgets: at the start of each segment only the last frame is kept."""

    def __init__(self, channels, cell, dtype=torch.float16, device="cpu"):
        self.channels, self.cell, self.dtype, self.device = int(channels), int(cell), dtype, device
        self.mem = LatentMemory(channels, cell, dtype, device)
        self.last = None  # (latent, depth, K, c2w) of the last frame the loop produced
        self.last_pixel_depth = None

    def __len__(self):
        return len(self.mem)

    def nbytes(self):
        return self.mem.nbytes()

    def write(self, latent, depth, K, cam_to_world, mask=None, ids=None, poses=None, maps=None):
        # the loop writes the whole completed frame with mask = its holes: that is the frame it produced
        self.last = (latent.clone(), depth.clone(), K, cam_to_world)
        self.last_pixel_depth = None if maps is None else maps.depth
        return self.mem.write(latent, depth, K, cam_to_world, mask, pixel_depth=self.last_pixel_depth)

    def read(self, K, cam_to_world, h, w, poses=None, ids=None, splats=True, maps=None):
        r = self.mem.read(K, cam_to_world, h, w, splats=splats)
        # a frame without holes is not written back; it is then exactly this read
        self.last = (r.latent.clone(), r.depth.clone(), K, cam_to_world)
        return MemoryRead(r.latent, r.hole, r.depth, None, r.splats)

    def begin_segment(self):
        if self.last is None:
            return
        latent, depth, K, c2w = self.last
        self.mem = LatentMemory(self.channels, self.cell, self.dtype, self.device)
        self.mem.write(latent, depth, K, c2w, pixel_depth=self.last_pixel_depth)

    def save(self, path):
        self.mem.save(path)

    @classmethod
    def load(cls, path, device="cpu", object_ids=()):
        inner = LatentMemory.load(path, device)
        mem = cls(inner.channels, inner.cell, inner.dtype, device)
        mem.mem = inner
        return mem
