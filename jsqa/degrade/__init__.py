"""Synthesis of test conditions: the impairment families (each declared once), clean speech
that sounds like many talkers, and the recipe that renders one clip from a seed.

numpy, scipy and soundfile only (codecs through ffmpeg/sox), so users can render the same
conditions the model was trained and tested on.
"""

from .families import FAMILIES, Family, Param, Sources, build_chain, draw_recipe
from .speech import TalkerPool

__all__ = ["FAMILIES", "Family", "Param", "Sources", "TalkerPool", "build_chain", "draw_recipe"]
