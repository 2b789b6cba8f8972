"""The scene's light as the light maps need it: lamps and a uniform world, as plain data."""
import math
from dataclasses import dataclass, field

import numpy as np


def luminance(rgb) -> float:
    """Rec. 709 luminance of a linear RGB colour (extra channels ignored)."""
    r, g, b = (float(c) for c in tuple(rgb)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@dataclass
class Lamp:
    """A sun (`direction` [3] toward it, `power` its irradiance) or a local lamp at `position` [3]
    (point, spot or area; `power` in watts) shining along `axis` [3], with a spot's cone angle and blend, and
    `radius` the size of a local lamp (an area lamp's half width): its light stays finite close to it."""
    kind: str  # "SUN", "POINT", "SPOT" or "AREA"
    power: float
    direction: np.ndarray = None
    position: np.ndarray = None
    axis: np.ndarray = None
    cone: float = None
    blend: float = 0.0
    radius: float = 0.0

    def incoming(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors toward the lamp [N, 3] and the irradiance it would give a surface facing it [N],
        for world points [N, 3]."""
        if self.kind == "SUN":
            return np.broadcast_to(self.direction, points.shape), np.full(len(points), self.power)
        to = self.position - points
        dist2 = np.maximum((to * to).sum(1), 1e-12)
        d = to / np.sqrt(dist2)[:, None]
        # a lamp of radius r lights a point at distance d about as a disc does: as 1 / (d^2 + r^2)
        dist2 = dist2 + self.radius * self.radius
        if self.kind == "AREA":  # a one-sided Lambertian emitter: intensity P / pi along its axis
            return d, self.power / math.pi * np.clip(-(d @ self.axis), 0.0, None) / dist2
        e = self.power / (4.0 * math.pi) / dist2  # a point (or spot) of power P: intensity P / (4 pi)
        if self.kind == "SPOT":
            c = -(d @ self.axis)
            edge = math.cos(self.cone / 2.0)
            soft = max(self.blend * (1.0 - edge), 1e-6)
            t = np.clip((c - edge) / soft, 0.0, 1.0)
            e = e * t * t * (3.0 - 2.0 * t)
        return d, e


@dataclass
class Lighting:
    """The lamps of one frame and the world's background radiance (one luminance, 0 without a world)."""
    lamps: list = field(default_factory=list)
    sky: float = 0.0
