"""Models: what turns a memory read into a finished frame (frame models) or a whole segment (segment models).

`base` defines the two interfaces and the values they exchange with the segment loop; `registry` loads a model
by name from its folder in models/ (model.json names its class as "module:Class" of this package). One module
per model family: `patch` (exact pixel patches), `compact` (the trained compact latent model and its nets),
`wan` (Wan2.1-VACE video diffusion) with its weight download in `hub`.
"""
from .registry import available, load  # noqa: F401  (the names a caller needs: models.load("builtin"))
