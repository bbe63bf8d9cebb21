"""The catalogue of recipes: every technique of the article, and the image
priors of Lucid, DeepInversion and MACO, each a named value (``get``).

What a recipe is (a start, a canvas, octaves of operations, an objective
and an update rule) is ``classgen_jax.recipe``; the operations are small
values of ``classgen_jax.operations``, applied in order without the engine
knowing their kinds. The image-prior recipes at the end (``lucid``,
``deepinversion``, ``maco``, ``maco_reference``, ``natural``, ``object``)
optimise a parameterisation rendered into the image inside every step
(``classgen_jax.parameterisations``), under DeepInversion's BatchNorm
statistics prior where they say so, for pictures with the colours and
spectrum of photos rather than grey high-frequency texture.

Copy a recipe and change it field by field::

    import dataclasses
    from classgen_jax import recipes
    octaves = recipes.get("octaves").octaves
    mine = dataclasses.replace(recipes.get("octaves"), octaves=(
        dataclasses.replace(octaves[0], iterations=50),) + octaves[1:])

Run one by name: ``python scripts/generate.py --recipe=octaves --classes=19``.
The numbers are the article's unless a comment says otherwise.

Input normalisation (``Classifier.normalisation``). The article's code feeds
[0, 1] images to torchvision with no visible normalisation, so its numbers
assume ``"none"``; the classifier's default is ``"imagenet"``, under which
every gradient is about 1/std = 4.4 times larger. Which reading each
recipe's numbers were set for, and what the other one changes:

* ``gradient``, ``logit_l1``, ``smooth``, ``resilient``, ``transfigure``,
  ``aux``, ``octaves``, ``octaves_coherent``, ``octaves_padded``,
  ``octaves_750``: the article's, ``"none"``. They step along the raw
  gradient, so under ``"imagenet"`` each step is about 4.4 times the
  article's (and the model sees another image). The article as its code
  runs: ``generate(clf.with_normalisation("none"), ...)``.
* ``sign``: the article's, ``"none"``; a sign step's size does not depend on
  the gradient's scale, so only what the model sees changes.
* ``deepdraw``: Caffe's mean-subtracted input, closest to ``"imagenet"``;
  L1-normalised steps do not depend on the gradient's scale.
* ``jittered_adam``: this project's, tuned under ``"imagenet"``.
"""

from __future__ import annotations

import dataclasses
import difflib

from classgen_jax import objectives as obj
from classgen_jax.operations import (
  Blur,
  Box,
  Clip,
  ColourJitter,
  Crop,
  Flip,
  Glance,
  Noise,
  Operation,
  Pad,
  PadRing,
  ResizeCycle,
  Roll,
  Rotate,
  Scale,
)
from classgen_jax.parameterisations import (
  Decorrelated,
  Fourier,
  Maco,
  Sigmoid,
)
from classgen_jax.recipe import Octave, Recipe
from classgen_jax.starts import Normal, Parameters, Photo, Uniform
from classgen_jax.updates import Adam, Gradient, L1Normalised, Sign

RECIPES: dict[str, Recipe] = {}


def _register(recipe: Recipe) -> Recipe:
  RECIPES[recipe.name] = recipe
  return recipe


# The article's objective for recipes 3-7: raise the target logit towards
# C = 200, with an L1 penalty on the image.
_ARTICLE_L1 = obj.logit_distance(200.0) - 0.001 * obj.l1()
# Its smoothness prior: a 3x3 blur (sigma 0.8) before the step, for the
# first 3/4 of the iterations.
_SMOOTHING = Blur((0.8, 0.8), until=75)
# Its transformation resilience: every step a colour jitter, then (during the
# first 76) the cyclic resize, then the blur. The jitter comes before the
# resize, as in the article's loop; with nearest resizing the two orders give
# the same image, with bilinear they differ wherever values left [0, 1]
# (the jitter clamps them).
_JITTER = ColourJitter(brightness=1e-4)
# The article's stabler start for recipes 3 on: U(0, 1) / 25 + 0.5.
_SCALED_UNIFORM = Uniform(25.0, 0.5)
_CYCLE = (256, 198, 160, 180, 200)

_register(Recipe(
    "gradient", Uniform(), 256,
    (Octave(1000, obj.log_probability(), Gradient(), (10000.0, 10000.0)),),
    description="Recipe 1: plain gradient descent on the cross-entropy from U(0,1) noise. "
                "Fools the model; looks like noise."))
_register(Recipe(
    "sign", Uniform(), 256,
    (Octave(100, obj.log_probability(), Sign(), (0.01, 0.01)),),
    description="Recipe 2: the gradient sign step (Goodfellow et al. 2014), from noise or a "
                "photo (init=)."))
_register(Recipe(
    "logit_l1", _SCALED_UNIFORM, 256,
    (Octave(100, _ARTICLE_L1, Gradient(), (0.15, 0.15)),),
    description="Recipe 3: raise the target logit towards C=200 with an L1 penalty on the "
                "image, from U(0,1)/25 + 0.5."))
_register(Recipe(
    "smooth", _SCALED_UNIFORM, 256,
    (Octave(100, _ARTICLE_L1, Gradient(), (0.15, 0.15), before=(_SMOOTHING,)),),
    description="Recipe 4: recipe 3 plus a 3x3 Gaussian blur (sigma 0.8) before every step "
                "of the first 3/4."))
_register(Recipe(
    "resilient", _SCALED_UNIFORM, 256,
    (Octave(100, _ARTICLE_L1, Gradient(), (0.15, 0.15),
            resize=ResizeCycle(_CYCLE, until=76, interpolation="nearest"),
            before_resize=(_JITTER,), before=(_SMOOTHING,)),),
    description="Recipe 5: recipe 4 plus, every step, colour jitter (brightness 1e-4) and "
                "then, for 76 steps, a cyclic nearest-neighbour resize (256, 198, 160, 180, "
                "200)."))
_register(Recipe(
    "transfigure", Photo(), 256,
    (Octave(100, _ARTICLE_L1, Gradient(), (0.15, 0.15),
            resize=ResizeCycle(_CYCLE, until=76, interpolation="bilinear"),
            before_resize=(_JITTER,), before=(_SMOOTHING,)),),
    description="Recipe 6: recipe 5 from a real photo (init=), with bilinear resizing so the "
                "photo does not drift."))
_register(Recipe(
    "aux", _SCALED_UNIFORM, 299,
    (Octave(100, obj.logit_distance(200.0, "aux") - 0.001 * obj.l1(), Gradient(), (0.3, 0.3),
            before=(_JITTER, _SMOOTHING)),),
    description="Recipe 7: recipes 3-5 on Inception-v3's auxiliary head at 299 px. The aux "
                "head needs >= 299 px, so the cyclic resize is left out; its gradients are "
                "smaller, so the step is doubled (0.3; the article gives no number)."))

# The article's octaves (recipes 8-10, and the ResNet illustration).
#
# Each iteration: a step on the gradient of a random crop, then a blur of the
# whole canvas; sigma and step size decay linearly within each octave.
#
# Readings of the article's octave code, and where the project deviates:
# * Objective. Recipes 8 and 9 step on ``layer_gradient``, the article's
#   ``|200 - O_y(a)| + 0.001 * sum|a|`` (the L1 on the model's input, here the
#   crop). Only the later, optimised GoogLeNet octaves drop the L1 ("no L1
#   regularization was employed ... on the optimized octaves"): recipe 10 and
#   the ResNet recipe use the plain logit.
# * Start. The article writes only "1x3x299x299 input"; its stated baseline
#   start is "a scaled uniform or normal random distribution", the
#   ``rand/25 + 0.5`` of its earlier recipes. So the octave recipes start from
#   ``Uniform(25, 0.5)`` (not a deviation). U(0, 1) is one field away:
#   ``dataclasses.replace(recipes.get("octaves"), start=Uniform())``.
# * Crops. As printed, the article's ``octave`` draws a crop of ``size`` and
#   then overwrites it at once with a "crop" of the whole image, so it never
#   crops (and with ``crop=False`` it reads a crop it never drew). The
#   evident intent, a random ``size`` px crop whose gradient updates only that
#   region (the article's own fix for the washed-out border indexes the
#   update by the crop), is what ``Crop(size)`` does: a deviation from the
#   code as printed, not from the text.
# * Input normalisation: the numbers assume the article's ``"none"`` (see the
#   module doc).
_OCTAVE_1 = Octave(100, _ARTICLE_L1, Gradient(), (1.5, 1.0), after=(Blur((2.4, 0.8)),))
_OCTAVE_2 = Octave(100, _ARTICLE_L1, Gradient(), (1.3, 0.45), canvas=340,
                   view=(Crop(320),), after=(Blur((1.5, 0.4)),))
_OCTAVE_3 = Octave(100, _ARTICLE_L1, Gradient(), (1.3, 0.45), canvas=390,
                   after=(Blur((1.5, 0.4)),))
_register(Recipe(
    "octaves", _SCALED_UNIFORM, 299, (_OCTAVE_1, _OCTAVE_2, _OCTAVE_3),
    description="Recipe 8: three octaves 299 -> 340 (random 320 crops) -> 390 px on the "
                "article's layer_gradient (target logit towards 200, L1 on the input), step "
                "size and blur decaying within each (Mordvintsev et al. 2015, Deep Dream)."))
_register(Recipe(
    "octaves_coherent", _SCALED_UNIFORM, 299,
    (Octave(220, _ARTICLE_L1, Gradient(), (6.0, 5.0), after=(Blur((2.4, 0.8)),)),
     Octave(500, _ARTICLE_L1, Gradient(), (1.3, 0.45), canvas=490,
            view=(Crop(470),), after=(Blur((1.5, 0.4)),))),
    description="Recipe 9: two octaves, 220 steps at 299 px then 500 at 490 px with 470 "
                "crops, for more coherent images (the article's layer_gradient, with L1)."))


def _optimised(octave: Octave) -> Octave:
  """An octave of the article's optimised GoogLeNet octaves: the plain logit, no L1."""
  return dataclasses.replace(octave, objective=obj.class_logit())


_register(Recipe(
    "octaves_padded", _SCALED_UNIFORM, 299,
    (dataclasses.replace(_optimised(_OCTAVE_1), before=(PadRing(0.7),)),
     _optimised(_OCTAVE_2), _optimised(_OCTAVE_3)),
    description="Recipe 10: recipe 8 on the plain target logit (no L1, as the article's "
                "optimised GoogLeNet octaves) with a 1-px ring of 0.7 painted every step of "
                "the first octave, so features stop collecting at the border."))
# The article does not print the octaves of its ResNet images; it changes "the
# last octave" to 750 px with 720 px crops. Read here as recipe 10, the octaves
# it had just optimised (padding, no L1), with that last octave.
_register(Recipe(
    "octaves_750", _SCALED_UNIFORM, 299,
    (dataclasses.replace(_optimised(_OCTAVE_1), before=(PadRing(0.7),)),
     _optimised(_OCTAVE_2),
     dataclasses.replace(_optimised(_OCTAVE_3), canvas=750, view=(Crop(720),))),
    description="The article's ResNet illustration ('collie'): recipe 10 with the last octave "
                "at 750 px and random 720 px crops, where one image shows features at widely "
                "different scales: the limit of the octaves' scale. Meant for ResNet "
                "(--model=resnet50)."))


def _deepdraw(iterations, head, step, sigma, canvas=None):
  """DeepDraw's octave: L1-normalised steps on 224 px crops, then clip, then blur.

  The order is DeepDraw's ``make_step``: ``src += step / mean|g| * g``, then
  ``np.clip``, then the blur of the image.
  """
  return Octave(iterations, obj.class_logit(head), L1Normalised(), step, canvas=canvas,
                view=(Crop(224),), after=(Clip(), Blur(sigma)))


_register(Recipe(
    "deepdraw", Normal(200 / 255, 8 / 255), 250,
    (_deepdraw(190, "logits", (11 / 255, 11 / 255), (2.5, 0.78)),
     _deepdraw(150, "logits", (6 / 255, 6 / 255), (0.936, 0.78), canvas=300),
     _deepdraw(150, "aux2", (6 / 255, 3 / 255), (0.936, 0.44), canvas=360),
     _deepdraw(10, "aux1", (3 / 255, 3 / 255), (0.44, 0.304))),
    description="DeepDraw (Øygard 2015): L1-normalised steps on 224 crops of a growing canvas, "
                "clip then blur, four octaves ending on GoogLeNet's aux heads (steps and "
                "noise converted from Caffe's 0-255 scale). Other models: "
                "recipes.get('deepdraw').with_head('logits')."))

_register(Recipe(
    "jittered_adam", Normal(0.5, 0.05), 160,
    (Octave(200, obj.class_logit(), Adam(), (0.08, 0.02),
            view=(Crop(144), Roll(6), Flip()), after=(Blur((1.2, 0.6)), Clip())),
     Octave(312, obj.class_logit(), Adam(), (0.04, 0.005), canvas=256,
            view=(Crop(224), Roll(8), Flip()), after=(Blur((0.8, 0.3)), Clip()))),
    description="This project's default, tuned for images that other models (and people) "
                "recognise within 512 steps: Adam on the pixels (DeepInversion, Lucid) with "
                "a decaying step, two scales (144 px crops of a 160 canvas, then 224 px "
                "crops of 256, the generator's native view), random crops + roll jitter + "
                "flips every step so no feature depends on an exact pixel position, a "
                "decaying blur (the article's smoothness prior), and clipping."))

# ----------------------------------------------------------------------------
# Image priors: pictures with the statistics of photos (issue 10).

# Lucid's image: a 1/f-scaled spectrum in decorrelated colours, squashed.
_LUCID_IMAGE = Sigmoid(Decorrelated(Fourier()))


def _robust(side: int) -> tuple[Operation, ...]:
  """Lucid's transformation robustness for a ``side`` px canvas: pad 12
  (grey), jitter 8, scale 0.9-1.1, rotate +-10 degrees, jitter 4 (its
  ``jitter(d)`` is a random crop ``d`` px smaller), and a flip."""
  return (Pad(12), Crop(side + 16), Scale(0.9, 1.1), Rotate(10.0), Crop(side + 12), Flip())


_register(Recipe(
    "lucid", Parameters(), 224,
    (Octave(512, obj.class_logit(), Adam(), (0.05, 0.05), view=_robust(224)),),
    image=_LUCID_IMAGE,
    description="Lucid (Olah et al. 2017, 'Feature Visualization'): Adam 0.05 for 512 steps "
                "on a decorrelated-colour, 1/f-scaled Fourier image behind a sigmoid, with "
                "its transformation robustness (pad 12, jitter 8, scale 0.9-1.1, rotate "
                "+-10, jitter 4) and a flip."))

_register(Recipe(
    "deepinversion", Normal(0.5, 0.2), 112,
    (Octave(200, obj.class_logit() - 0.01 * obj.batchnorm_statistics()
            - 1e-4 * obj.total_variation_l2() - 1e-5 * obj.l2_norm(),
            Adam(b1=0.5, b2=0.9), (0.25, 0.0), view=(Roll(15), Flip()), after=(Clip(),)),
     Octave(150, obj.class_logit() - 0.01 * obj.batchnorm_statistics()
            - 1e-4 * obj.total_variation_l2() - 1e-5 * obj.l2_norm(),
            Adam(b1=0.5, b2=0.9), (0.1, 0.0), canvas=224, view=(Roll(30), Flip()),
            after=(Clip(),))),
    description="DeepInversion (Yin et al. 2020): Adam (betas 0.5, 0.9) on the pixels with a "
                "decaying step, the target logit against the BatchNorm statistics prior "
                "(0.01, first layer x10, per image), TV-L2 1e-4 and L2 1e-5, roll jitter and "
                "flips, 112 px then 224 px (the paper's 2k + 1k steps, shortened; its "
                "cross-entropy replaced by the logit, which the prior does not overwhelm)."))

_register(Recipe(
    "maco", Parameters(), 200,
    (Octave(256, obj.class_logit(), Adam(), (1.0, 1.0),
            view=(Scale(1.0, 1.5), Crop(176), Flip(), Noise(0.08)), views=4),),
    image=Sigmoid(Decorrelated(Maco())),
    description="MACO (Fel et al. 2023): only the Fourier phase is optimised, the magnitude "
                "fixed to the bundled photos' average spectrum (200 px, their smallest side); "
                "each step averages 4 random zoomed crops with noise 0.08; Adam at 1.0 on the "
                "phase (Horama's rate: steps of 0.05 barely turn it, and the judges named 2 "
                "of 8 classes, against 3-4 at 0.5 and 1.0)."))

# MACO as its reference code runs it (serre-lab/Horama, maco_fv.py and
# common.py): six boxes of 25-30% of the canvas's side a step, centred at
# 0.5 + N(0, 0.15), each shown to the model at 224 px with a little noise,
# 1000 steps of (N)Adam at 1.0 on the phase, the importance map accumulated
# from the gradients. Read here on a 512 px canvas (the reference's 1280 is
# 2.5 times the side, 6 times the pixels, on a CPU), with its proportions; a
# 1/f^1.4 magnitude in place of the ImageNet spectrum it downloads (the
# bundled photos' stop at 200 px); its noise (0.05 of the model's input
# range, normal plus uniform) as a normal noise of 0.011 on [0, 1] pixels.
_register(Recipe(
    "maco_reference", Parameters(), 512,
    (Octave(1000, obj.class_logit(), Adam(), (1.0, 1.0),
            view=(Box(0.25, 0.30, 0.15, out=224), Noise(0.011)), views=6, importance=True),),
    image=Sigmoid(Decorrelated(Maco(alpha=1.4))),
    description="MACO as Horama's code runs it, on a 512 px canvas: 6 boxes of 25-30% of "
                "the side a step around the centre, 1000 Adam steps at 1.0 on the phase of a "
                "1/f^1.4 spectrum, and the importance map (saved beside each image)."))

_register(Recipe(
    "natural", Parameters(), 224,
    (Octave(256, obj.class_logit() - 0.005 * obj.batchnorm_statistics()
            - 3e-3 * obj.total_variation_l2(), Adam(),
            (0.05, 0.05), view=_robust(224), views=2),),
    image=Sigmoid(Decorrelated(Fourier(), saturation=3.0)),
    description="Lucid's image, its colour opponents' steps tripled (saturation 3: photos' "
                "colourfulness), and transformation robustness, with DeepInversion's "
                "BatchNorm statistics prior (0.005, per image) and total variation (TV-L2 "
                "3e-3: a steeper spectrum), two views a step, 256 steps: images the judges "
                "name, with the colours and spectrum of photos."))

# One object a person names, with the detail the judges need: MACO's phase
# image (one object on a natural spectrum), its colours doubled, under the
# BatchNorm prior, every view also seen at a glance; then a short octave of
# ``natural``'s image, prior and robustness (glances kept) on the object
# drawn. Chosen by the measure that agrees with the eye (docs/quality.md).
_GLANCE = Glance(32, 96, 0.75)
_register(Recipe(
    "object", Parameters(), 200,
    (Octave(256, obj.class_logit() - 0.005 * obj.batchnorm_statistics(), Adam(), (1.0, 1.0),
            view=(Scale(1.0, 1.5), Crop(176), Flip(), Noise(0.08), _GLANCE), views=4),
     Octave(64, obj.class_logit() - 0.005 * obj.batchnorm_statistics()
            - 3e-3 * obj.total_variation_l2(), Adam(), (0.05, 0.05), canvas=224,
            view=(*_robust(224), _GLANCE), views=2,
            image=Sigmoid(Decorrelated(Fourier(), saturation=3.0)))),
    image=Sigmoid(Decorrelated(Maco(), saturation=2.0)),
    description="One object a person names: 256 steps of MACO's phase image (colours "
                "doubled, the BatchNorm prior, 4 zoomed crops a step, each also seen at a "
                "glance: blurred as a 32-96 px thumbnail), then 64 steps of natural's "
                "Fourier image, prior and robustness on the object drawn, glances kept."))

# A layer's units (``Recipe.for_units``, ``classgen_jax.units``): Lucid's
# image and transformation robustness, as its channel visualisations are
# made; the class logit stands for the unit it is replaced with.
_register(Recipe(
    "units", Parameters(), 224,
    (Octave(256, obj.class_logit(), Adam(), (0.05, 0.05), view=_robust(224)),),
    image=_LUCID_IMAGE,
    description="A layer's units (scripts/generate.py --layer): Lucid's decorrelated "
                "Fourier image behind a sigmoid, its transformation robustness and a flip, "
                "Adam 0.05 for 256 steps."))

# Chosen by measurement (docs/quality.md): on the 32 default classes at full
# length the judges name all 32 at full size and 31 at a glance (the measure
# that agrees with the eye), with photos' colourfulness and a spectrum
# steeper than natural's, at 1.5 times natural's time per image; by eye, 15
# of the first 16 are named outright, where natural's were collages.
DEFAULT = "object"
# For a model without BatchNorm layers (a ViT), whose statistics ``object``'s
# prior reads: MACO's phase image, made for ViTs (Fel et al. 2023).
DEFAULT_WITHOUT_BATCHNORM = "maco"

# Earlier names, still accepted by ``get`` (runs and commands made with them).
ALIASES = {"recognisable": "jittered_adam"}


def default_for(classifier) -> str:
  """The default recipe for ``classifier``: ``DEFAULT``, or
  ``DEFAULT_WITHOUT_BATCHNORM`` for a model without BatchNorm."""
  return DEFAULT if classifier.has_batchnorm else DEFAULT_WITHOUT_BATCHNORM


def names() -> tuple[str, ...]:
  return tuple(RECIPES)


def get(name: str, *, steps_scale: float = 1.0) -> Recipe:
  """The recipe ``name``, with every octave's iterations scaled by ``steps_scale``.

  Raises:
    ValueError: unknown name (with close matches).
  """
  name = ALIASES.get(name, name) if isinstance(name, str) else name
  if isinstance(name, Recipe):
    recipe = name
  elif name in RECIPES:
    recipe = RECIPES[name]
  else:
    close = difflib.get_close_matches(str(name), RECIPES, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(f"unknown recipe {name!r}; {hint}recipes: {', '.join(RECIPES)}")
  return recipe if steps_scale == 1.0 else recipe.scaled(steps_scale)
