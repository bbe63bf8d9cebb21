"""Candidate recipes for the screens (registered into the catalogue at import)."""
import dataclasses
from classgen_jax import recipes as R, objectives as obj
from classgen_jax.operations import Glance, Scale, Crop, Flip, Noise, Pad, Rotate
from classgen_jax.parameterisations import Sigmoid, Decorrelated, Maco, Fourier
from classgen_jax.starts import Parameters
from classgen_jax.updates import Adam
from classgen_jax.recipes import Octave, Recipe

natural = R.get("natural")
maco = R.get("maco")

def with_view(recipe, name, extra, **octave):
  o = recipe.octaves[0]
  return dataclasses.replace(recipe, name=name, octaves=(dataclasses.replace(o, view=(*o.view, *extra), **octave),))

def with_objective(recipe, name, objective):
  o = recipe.octaves[0]
  return dataclasses.replace(recipe, name=name, octaves=(dataclasses.replace(o, objective=objective),))

CANDIDATES = [
  with_view(natural, "natural_glance", (Glance(40, 112, 0.5),)),
  with_view(maco, "maco_glance", (Glance(40, 112, 0.5),)),
  with_objective(maco, "maco_bn", obj.class_logit() - 0.005 * obj.batchnorm_statistics()),
]
for c in CANDIDATES:
  R.RECIPES[c.name] = c

def with_image(recipe, name, image):
  return dataclasses.replace(recipe, name=name, image=image)

maco_bn = R.RECIPES["maco_bn"]
CANDIDATES2 = [
  with_view(maco_bn, "maco_bn_glance", (Glance(40, 112, 0.5),)),
  with_image(with_view(maco_bn, "maco_bn_glance_sat", (Glance(40, 112, 0.5),)), "maco_bn_glance_sat", Sigmoid(Decorrelated(Maco(), saturation=2.0))),
  with_objective(with_view(maco, "maco_bn2_glance_strong", (Glance(32, 96, 0.75),)), "maco_bn2_glance_strong", obj.class_logit() - 0.02 * obj.batchnorm_statistics()),
  with_view(natural, "natural_glance_strong", (Glance(24, 64, 0.75),)),
]
for c in CANDIDATES2:
  R.RECIPES[c.name] = c

def maco_variant(name, bn=0.005, saturation=2.0, glance=Glance(32, 96, 0.75), views=None, steps=None):
  o = maco.octaves[0]
  objective = obj.class_logit() - bn * obj.batchnorm_statistics() if bn else obj.class_logit()
  view = (*o.view, glance) if glance is not None else o.view
  octave = dataclasses.replace(o, objective=objective, view=view, views=views or o.views,
                               iterations=steps or o.iterations)
  return dataclasses.replace(maco, name=name, octaves=(octave,),
                             image=Sigmoid(Decorrelated(Maco(), saturation=saturation)))

CANDIDATES3 = [
  maco_variant("maco_sat_glance_strong"),
  maco_variant("maco_bn02_sat_glance_strong", bn=0.02),
  maco_variant("maco_sat15_glance_strong", saturation=1.5),
]
for c in CANDIDATES3:
  R.RECIPES[c.name] = c

def _robust(side):
  return (Pad(12), Crop(side + 16), Scale(0.9, 1.1), Rotate(10.0), Crop(side + 12), Flip())

def maco_then_detail(name, first, detail_steps=64, lr=0.05, glance=Glance(32, 96, 0.75), bn=0.005, tv=3e-3, saturation=3.0):
  o1 = first.octaves[0]
  o2 = Octave(detail_steps, obj.class_logit() - bn * obj.batchnorm_statistics() - tv * obj.total_variation_l2(),
              Adam(), (lr, lr), canvas=224, view=(*_robust(224), glance), views=2,
              image=Sigmoid(Decorrelated(Fourier(), saturation=saturation)))
  return dataclasses.replace(first, name=name, octaves=(o1, o2))

CANDIDATES4 = [
  maco_then_detail("maco_sat_glance_detail", R.RECIPES["maco_sat_glance_strong"]),
  maco_then_detail("maco_sat_glance_detail_low", R.RECIPES["maco_sat_glance_strong"], lr=0.02),
]
for c in CANDIDATES4:
  R.RECIPES[c.name] = c
