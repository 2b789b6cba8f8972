"""The synthesis model: the compact codec, with what no image showed invented by example on the scene's
surfaces (`model`: the frame model; `imagine`: the region synthesis; `planes`: planes continued through their
repeat)."""
from .model import SynthModel  # noqa: F401  (model.json names synth:SynthModel)
