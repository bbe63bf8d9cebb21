"""Candidate recipes for a layer's units, screened by
``classgen_jax.unit_quality.evaluate`` (registered into the catalogue at import)."""
import dataclasses

from classgen_jax import objectives as obj
from classgen_jax import recipes as R

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
