"""Reading the scene into plain data (core/), one module per concept: camera, geometry, lights, motion,
materials, and the per-frame export that puts them together. Only these modules read the scene for
the export; the maths is in core/."""
