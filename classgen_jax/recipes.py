"""Recipes: every technique of the article as a frozen, documented config.

A recipe is a starting image and a list of octaves. An octave is a run of
iterations at one canvas size; each iteration (in this order):

1. canvas transforms the article applies to the image itself: the 1-px
   padding ring, colour jitter, the cyclic resize, and the blur when
   ``blur_order == "before"``;
2. the model's *view*: a random crop of the canvas (``crop``), rolled by up
   to ``jitter`` px and flipped, if asked;
3. the objective on the view, its gradient back to the canvas, and the
   update rule's step (step size following ``step_size`` linearly);
4. the blur (``blur_order == "after"``), of the whole image or only of the
   crop just updated, with sigma following ``blur_sigma`` linearly;
5. clipping to [0, 1], if asked.

Copy a recipe and change it field by field::

    import dataclasses
    from classgen_jax import recipes
    octaves = recipes.get("octaves").octaves
    mine = dataclasses.replace(recipes.get("octaves"), octaves=(
        dataclasses.replace(octaves[0], iterations=50),) + octaves[1:])

Run one by name: ``python scripts/generate.py --recipe=octaves --classes=19``.
The numbers are the article's (``shared/docs/RECIPES.md``) unless a field's
comment says otherwise.
"""

from __future__ import annotations

import dataclasses
import difflib

from classgen_jax import objectives as obj
from classgen_jax.updates import Update

INITS = ("uniform", "scaled_uniform", "normal", "photo")
INTERPOLATIONS = ("bilinear", "nearest")


@dataclasses.dataclass(frozen=True)
class Octave:
  """One stage of the optimisation at a fixed canvas size.

  Attributes:
    iterations: steps in this octave.
    objective: what the steps raise (``classgen_jax.objectives``).
    update: the update rule (``classgen_jax.updates.Update``).
    step_size: (first, last) step size; linear in between.
    canvas: resize the image to this side (bilinear) before the octave;
      None keeps the size it has.
    crop: side of the random crop the model sees; None: the whole canvas.
    jitter: roll the view by up to this many px each step (view only).
    flip: flip the view horizontally at random (view only).
    blur_sigma: (first, last) Gaussian blur sigma; None: no blur.
    blur_kernel: blur kernel side.
    blur_iterations: blur only during the first this-many iterations
      (None: all of them; the smoothness prior blurs the first 3/4).
    blur_region: ``"image"`` or ``"crop"`` (only the region just updated,
      which avoids the washed-out border the article shows).
    blur_order: ``"before"`` the gradient (the article's smoothness and
      resilience code) or ``"after"`` the update (its octave code).
    pad_value: if set, every step paints a ring of ``pad_width`` px of this
      value around the image (the article's ``Pad([1, 1], fill=0.7)``, kept
      at a fixed size: see ``transforms.fill_border``).
    pad_width: the ring's width.
    resize_cycle: the article's cyclic resize sizes (resilience recipe).
    resize_iterations: resize cyclically during the first this-many steps.
    interpolation: ``"nearest"`` (``F.interpolate``'s default, which drifts
      the image to the bottom-right) or ``"bilinear"``.
    brightness, contrast, saturation: colour jitter strengths per step
      (torchvision ``ColorJitter`` semantics), applied to the image itself.
    clip: clip the image to [0, 1] after every step.
  """
  iterations: int
  objective: obj.Objective = obj.class_logit()
  update: Update = Update("gradient")
  step_size: tuple[float, float] = (1.0, 1.0)
  canvas: int | None = None
  crop: int | None = None
  jitter: int = 0
  flip: bool = False
  blur_sigma: tuple[float, float] | None = None
  blur_kernel: int = 3
  blur_iterations: int | None = None
  blur_region: str = "image"
  blur_order: str = "after"
  pad_value: float | None = None
  pad_width: int = 1
  resize_cycle: tuple[int, ...] = ()
  resize_iterations: int = 0
  interpolation: str = "bilinear"
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  clip: bool = False

  def __post_init__(self):
    if self.iterations < 1:
      raise ValueError(f"an octave needs at least 1 iteration, got {self.iterations}")
    if self.interpolation not in INTERPOLATIONS:
      raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got "
                       f"{self.interpolation!r}")
    if self.blur_region not in ("image", "crop"):
      raise ValueError(f"blur_region must be 'image' or 'crop', got {self.blur_region!r}")
    if self.blur_order not in ("before", "after"):
      raise ValueError(f"blur_order must be 'before' or 'after', got {self.blur_order!r}")
    if self.blur_kernel % 2 != 1:
      raise ValueError(f"blur_kernel must be odd, got {self.blur_kernel}")

  @property
  def heads(self) -> tuple[str, ...]:
    return self.objective.heads

  def scaled(self, factor: float) -> Octave:
    """The octave with every iteration count scaled by ``factor``."""
    def scale(n):
      return None if n is None else max(1, round(n * factor)) if n else 0
    return dataclasses.replace(
        self, iterations=scale(self.iterations),
        blur_iterations=scale(self.blur_iterations),
        resize_iterations=scale(self.resize_iterations))


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A starting image and its octaves.

  Attributes:
    name: the recipe's name.
    init: ``"uniform"`` U(0, 1); ``"scaled_uniform"`` U(0, 1)/25 + 0.5 (the
      article's stabler start); ``"normal"`` N(init_mean, init_std);
      ``"photo"`` (needs ``init=`` photos).
    size: side of the starting canvas (a photo is resized to it).
    octaves: the stages, in order.
    init_mean, init_std: of the ``"normal"`` start.
    description: one line, and where the technique comes from.
  """
  name: str
  init: str
  size: int
  octaves: tuple[Octave, ...]
  init_mean: float = 0.5
  init_std: float = 0.1
  description: str = ""

  def __post_init__(self):
    if self.init not in INITS:
      raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
    if not self.octaves:
      raise ValueError("a recipe needs at least one octave")

  @property
  def heads(self) -> tuple[str, ...]:
    """Every classifier head the recipe reads."""
    heads = []
    for octave in self.octaves:
      heads += [h for h in octave.heads if h not in heads]
    return tuple(heads)

  @property
  def iterations(self) -> int:
    return sum(o.iterations for o in self.octaves)

  def scaled(self, factor: float) -> Recipe:
    """Every octave shortened (or lengthened) proportionally."""
    if factor <= 0:
      raise ValueError(f"steps_scale must be positive, got {factor}")
    return dataclasses.replace(self, octaves=tuple(o.scaled(factor) for o in self.octaves))

  def with_head(self, head: str) -> Recipe:
    """The recipe with every objective term moved to ``head``."""
    def move(objective):
      return obj.Objective(tuple(
          (w, dataclasses.replace(t, head=head) if t.head else t) for w, t in objective.terms))
    return dataclasses.replace(self, octaves=tuple(
        dataclasses.replace(o, objective=move(o.objective)) for o in self.octaves))


_ARTICLE_L1 = obj.logit_distance(200.0) - 0.001 * obj.l1()
_SMOOTH = dict(blur_sigma=(0.8, 0.8), blur_kernel=3, blur_order="before")
_RESILIENT = dict(_SMOOTH, brightness=1e-4, resize_cycle=(256, 198, 160, 180, 200),
                  resize_iterations=76, interpolation="nearest")



RECIPES: dict[str, Recipe] = {}


def _register(recipe: Recipe) -> Recipe:
  RECIPES[recipe.name] = recipe
  return recipe


_register(Recipe(
    "gradient", "uniform", 256,
    (Octave(1000, obj.log_probability(), Update("gradient"), (10000.0, 10000.0)),),
    description="Recipe 1: plain gradient descent on the cross-entropy from U(0,1) noise. "
                "Fools the model; looks like noise."))
_register(Recipe(
    "sign", "uniform", 256,
    (Octave(100, obj.log_probability(), Update("sign"), (0.01, 0.01)),),
    description="Recipe 2: the gradient sign step (Goodfellow et al. 2014), from noise or a "
                "photo (init=)."))
_register(Recipe(
    "logit_l1", "scaled_uniform", 256,
    (Octave(100, _ARTICLE_L1, Update("gradient"), (0.15, 0.15)),),
    description="Recipe 3: raise the target logit towards C=200 with an L1 penalty on the "
                "image, from U(0,1)/25 + 0.5."))
_register(Recipe(
    "smooth", "scaled_uniform", 256,
    (Octave(100, _ARTICLE_L1, Update("gradient"), (0.15, 0.15), blur_iterations=75,
            **_SMOOTH),),
    description="Recipe 4: recipe 3 plus a 3x3 Gaussian blur (sigma 0.8) before every step "
                "of the first 3/4."))
_register(Recipe(
    "resilient", "scaled_uniform", 256,
    (Octave(100, _ARTICLE_L1, Update("gradient"), (0.15, 0.15), blur_iterations=75,
            **_RESILIENT),),
    description="Recipe 5: recipe 4 plus colour jitter (brightness 1e-4) every step and a "
                "cyclic nearest-neighbour resize (256, 198, 160, 180, 200) for 76 steps."))
_register(Recipe(
    "transfigure", "photo", 256,
    (Octave(100, _ARTICLE_L1, Update("gradient"), (0.15, 0.15), blur_iterations=75,
            **dict(_RESILIENT, interpolation="bilinear")),),
    description="Recipe 6: recipe 5 from a real photo (init=), with bilinear resizing so the "
                "photo does not drift."))
_register(Recipe(
    "aux", "scaled_uniform", 299,
    (Octave(100, obj.logit_distance(200.0, "aux") - 0.001 * obj.l1(), Update("gradient"),
            (0.3, 0.3), blur_iterations=75, brightness=1e-4, **_SMOOTH),),
    description="Recipe 7: recipes 3-5 on Inception-v3's auxiliary head at 299 px. The aux "
                "head needs >= 299 px, so the cyclic resize is left out; its gradients are "
                "smaller, so the step is doubled (0.3; the article gives no number)."))
_OCTAVE_1 = Octave(100, obj.class_logit(), Update("gradient"), (1.5, 1.0),
                   blur_sigma=(2.4, 0.8))
_OCTAVE_2 = Octave(100, obj.class_logit(), Update("gradient"), (1.3, 0.45), canvas=340,
                   crop=320, blur_sigma=(1.5, 0.4))
_OCTAVE_3 = Octave(100, obj.class_logit(), Update("gradient"), (1.3, 0.45), canvas=390,
                   blur_sigma=(1.5, 0.4))
_register(Recipe(
    "octaves", "uniform", 299, (_OCTAVE_1, _OCTAVE_2, _OCTAVE_3),
    description="Recipe 8: three octaves 299 -> 340 (random 320 crops) -> 390 px on the "
                "target logit, step size and blur decaying within each (Mordvintsev et al. "
                "2015, Deep Dream)."))
_register(Recipe(
    "octaves_coherent", "uniform", 299,
    (Octave(220, obj.class_logit(), Update("gradient"), (6.0, 5.0), blur_sigma=(2.4, 0.8)),
     Octave(500, obj.class_logit(), Update("gradient"), (1.3, 0.45), canvas=490, crop=470,
            blur_sigma=(1.5, 0.4))),
    description="Recipe 9: two octaves, 220 steps at 299 px then 500 at 490 px with 470 "
                "crops, for more coherent images."))
_register(Recipe(
    "octaves_padded", "uniform", 299,
    (dataclasses.replace(_OCTAVE_1, pad_value=0.7), _OCTAVE_2, _OCTAVE_3),
    description="Recipe 10: recipe 8 with a 1-px ring of 0.7 painted every step of the first "
                "octave, so features stop collecting at the border."))
_DD = dict(update=Update("l1"), crop=224, clip=True)
_register(Recipe(
    "deepdraw", "normal", 250,
    (Octave(190, obj.class_logit("logits"), step_size=(11 / 255, 11 / 255),
            blur_sigma=(2.5, 0.78), **_DD),
     Octave(150, obj.class_logit("logits"), step_size=(6 / 255, 6 / 255), canvas=300,
            blur_sigma=(0.936, 0.78), **_DD),
     Octave(150, obj.class_logit("aux2"), step_size=(6 / 255, 3 / 255), canvas=360,
            blur_sigma=(0.936, 0.44), **_DD),
     Octave(10, obj.class_logit("aux1"), step_size=(3 / 255, 3 / 255),
            blur_sigma=(0.44, 0.304), **_DD)),
    init_mean=200 / 255, init_std=8 / 255,
    description="DeepDraw (Øygard 2015): L1-normalised steps on 224 crops of a growing canvas, "
                "clip then blur, four octaves ending on GoogLeNet's aux heads (steps and "
                "noise converted from Caffe's 0-255 scale). Other models: "
                "recipes.get('deepdraw').with_head('logits')."))

_register(Recipe(
    "recognisable", "normal", 160,
    (Octave(200, obj.class_logit(), Update("adam"), (0.08, 0.02), crop=144, jitter=6,
            flip=True, blur_sigma=(1.2, 0.6), clip=True),
     Octave(312, obj.class_logit(), Update("adam"), (0.04, 0.005), canvas=256, crop=224,
            jitter=8, flip=True, blur_sigma=(0.8, 0.3), clip=True)),
    init_mean=0.5, init_std=0.05,
    description="This project's default, tuned for images that other models (and people) "
                "recognise within 512 steps: Adam on the pixels (DeepInversion, Lucid) with "
                "a decaying step, two scales (144 px crops of a 160 canvas, then 224 px "
                "crops of 256, the generator's native view), random crops + roll jitter + "
                "flips every step so no feature depends on an exact pixel position, a "
                "decaying blur (the article's smoothness prior), and clipping."))

DEFAULT = "recognisable"


def names() -> tuple[str, ...]:
  return tuple(RECIPES)


def get(name: str, *, steps_scale: float = 1.0) -> Recipe:
  """The recipe ``name``, with every octave's iterations scaled by ``steps_scale``.

  Raises:
    ValueError: unknown name (with close matches).
  """
  if isinstance(name, Recipe):
    recipe = name
  elif name in RECIPES:
    recipe = RECIPES[name]
  else:
    close = difflib.get_close_matches(str(name), RECIPES, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(f"unknown recipe {name!r}; {hint}recipes: {', '.join(RECIPES)}")
  return recipe if steps_scale == 1.0 else recipe.scaled(steps_scale)
