"""The compact codec that invents what no image showed: before each segment, the surfaces its frames see and the
memory lacks are completed once, each in its own coordinates (charts.py, with complete.py's completion), and
written into the memory; the frames then read them back like seen content. What is left to a frame (cracks
between stored cells, sky) takes the codec's smooth fill."""
from .charts import Inventor
from ..compact import LearnedModel


class SynthModel(LearnedModel):
    """LearnedModel's codec, drawing and smooth fill; the surfaces' unseen parts invented once per segment."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inventor = Inventor(self)

    def invent(self, memory, views, generator=None):
        views = iter(views)
        first = next(views, None)
        if first is None:
            return
        self.inventor.run(memory, _chain(first, views), first.exemplars, generator)


def _chain(first, rest):
    yield first
    yield from rest
