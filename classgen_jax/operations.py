"""Image operations of a recipe: small frozen values, each a draw and an apply.

An octave lists its operations in three places, applied in order every
iteration (``recipes.Octave``):

* ``before``: on the canvas itself, before the gradient (the article's
  colour jitter and smoothing blur, the padding ring);
* ``view``: from the canvas to what the model sees, differentiated through
  (random crop, roll jitter, flips; Lucid's transformation robustness:
  ``Pad``, ``Scale``, ``Rotate``; MACO's ``Noise``); each view operation
  draws for the side of the image it receives (a ``Crop`` after a ``Pad``
  crops the padded view);
* ``after``: on the canvas after the update (the octaves' blur, clipping).

Every operation works on one image ``(H, W, 3)``; the engine vmaps it over
the batch. Each has

* ``draw(key, side, dtype)``: its random parameters for one image at a
  canvas side of ``side`` px (``None`` when it draws nothing);
* ``__call__(image, params, context)``: the pure, deterministic apply.

So the torch reference path replays exactly the same draws: its twin of an
operation is found by type (``converters/reference/operations.py``), and
adding an operation is one new value here and its twin there.

``context`` carries what an operation may read besides its own draw: the
iteration (for schedules) and the region of the canvas the view shows (for
``Blur(region="crop")``, which blurs only the crop just updated).

Randomness: an iteration's key is split into independent streams, one per
random operation. Streams 0-3 are those of the crop, roll, flip and colour
jitter since the first version, so their images are unchanged; other
operations take streams from 5 on, in the order they are listed.
"""

from classgen_jax.canvas import Blur, Clip, ColourJitter, PadRing, ResizeCycle
from classgen_jax.operation import Context, Operation
from classgen_jax.views import Box, Crop, Flip, Glance, Noise, Pad, Roll, Rotate, Scale

__all__ = ["Blur", "Box", "Clip", "ColourJitter", "Context", "Crop", "Flip", "Glance", "Noise",
           "Operation", "Pad", "PadRing", "ResizeCycle", "Roll", "Rotate", "Scale"]
