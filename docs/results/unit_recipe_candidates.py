"""Candidate recipes for a layer's units, screened by
``classgen_jax.unit_quality.evaluate`` (registered into the catalogue at import)."""
import dataclasses

from classgen_jax import objectives as obj
from classgen_jax import recipes as R
from classgen_jax.operations import Scale

units, natural = R.get("units"), R.get("natural")


def replaced(recipe, name, **octave):
  return dataclasses.replace(recipe, name=name, octaves=(
      dataclasses.replace(recipe.octaves[0], **octave),))


CANDIDATES = [
    # natural's colours, two views and TV-L2, without its BatchNorm prior
    replaced(natural, "units_natural",
             objective=obj.class_logit() - 3e-3 * obj.total_variation_l2()),
    # Lucid's with the BatchNorm statistics prior (photos' statistics)
    replaced(units, "units_bn", objective=obj.class_logit() - 0.005 * obj.batchnorm_statistics()),
]
for candidate in CANDIDATES:
  R.RECIPES[candidate.name] = candidate

# Round 2: Lucid's colours with natural's two views and TV-L2 (the first
# round's units_natural without its saturation); and object's two octaves
# (MACO's phase image, then Lucid's Fourier detail) without the BatchNorm
# prior and glances, its zoom narrowed so the pattern fills the canvas.
maco, lucid_octave = R.get("maco"), units.octaves[0]
CANDIDATES2 = [
    replaced(units, "units_tv", objective=obj.class_logit() - 3e-3 * obj.total_variation_l2(),
             views=2),
    dataclasses.replace(
        maco, name="units_maco_detail",
        octaves=(dataclasses.replace(maco.octaves[0], iterations=192,
                                     view=(Scale(1.0, 1.2), *maco.octaves[0].view[1:])),
                 dataclasses.replace(lucid_octave, iterations=64, canvas=224,
                                     image=units.image))),
]
for candidate in CANDIDATES2:
  R.RECIPES[candidate.name] = candidate
