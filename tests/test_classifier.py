"""The Classifier contract: inputs, heads, sizes, pytree-ness."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import classgen_jax
from classgen_jax import Needs, models
from tests.helpers import tiny


@functools.cache
def flax_abstract(name: str) -> classgen_jax.Classifier:
  """A catalogue model whose weights are shapes only: for ``jax.eval_shape``
  checks of the contract, with nothing compiled or computed."""
  spec = models.MODELS[name]
  module = models.build(spec.architecture, spec.config)
  images = jax.ShapeDtypeStruct((1, spec.input_size, spec.input_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, heads=module.heads),
                             images)
  return classgen_jax.Classifier(module, variables, name, spec.input_size)


def _shapes(clf, images, **kwargs):
  """``clf(images, **kwargs)``, traced only: the checks run, nothing computes."""
  images = jax.ShapeDtypeStruct(images.shape, images.dtype)
  return jax.eval_shape(lambda c, x: c(x, **kwargs), clf, images)


def test_outputs_are_named_heads():
  clf = flax_abstract("googlenet")
  out = _shapes(clf, np.zeros((2, 224, 224, 3), np.float32))
  assert set(out) == {"logits", "aux1", "aux2"}
  assert all(v.shape == (2, 1000) for v in out.values())
  assert set(_shapes(clf, np.zeros((1, 224, 224, 3), np.float32), heads=["aux2"])) == {"aux2"}
  # And with real weights, real numbers.
  small = jax.jit(lambda c, x: c(x)["logits"])(tiny(), np.zeros((2, 40, 40, 3), np.float32))
  assert small.shape[0] == 2 and np.isfinite(np.asarray(small)).all()


@pytest.mark.parametrize("images,match", [
    (np.zeros((224, 224, 3), np.float32), r"add a batch axis"),
    (np.zeros((1, 224, 224, 1), np.float32), r"3 channels"),
    (np.zeros((1, 3, 224, 224), np.float32), r"3 channels"),
    (np.zeros((1, 224, 224, 3), np.uint8), r"images / 255"),
])
def test_bad_images_give_clear_errors(images, match):
  with pytest.raises(classgen_jax.InputError, match=match):
    flax_abstract("resnet18")(images)  # refused before anything computes


def test_unknown_head():
  with pytest.raises(classgen_jax.InputError, match="heads are logits, aux"):
    _shapes(flax_abstract("inception_v3"), np.zeros((1, 299, 299, 3), np.float32),
            heads=("aux1",))


def test_aux_head_size_error_names_the_size_it_needs():
  clf = flax_abstract("inception_v3")
  need = clf.min_input_size("aux")
  assert 250 < need <= 299
  with pytest.raises(classgen_jax.InputError, match=f"at least {need}x{need}"):
    _shapes(clf, np.zeros((1, 224, 224, 3), np.float32), heads=("aux",))
  # The main head is fully convolutional: 224 is fine for it.
  out = _shapes(clf, np.zeros((1, 224, 224, 3), np.float32), heads=("logits",))
  assert out["logits"].shape == (1, 1000)
  # And the minimum really is the minimum: one pixel less fails in the model itself.
  assert clf.module.spatial_size(need, "aux") >= 1 > clf.module.spatial_size(need - 1, "aux")


def test_too_small_for_main_head():
  clf = flax_abstract("googlenet")
  need = clf.min_input_size()
  _shapes(clf, np.zeros((1, need, need, 3), np.float32), heads=("logits",))
  with pytest.raises(classgen_jax.InputError, match="at least"):
    _shapes(clf, np.zeros((1, need - 1, need + 50, 3), np.float32), heads=("logits",))


def _count(jaxpr, primitive="conv_general_dilated"):
  return str(jaxpr).count(primitive)


# GoogLeNet's aux heads branch off early; Inception-v3's (three traces of the
# larger model, 4 s) in the slow pass.
@pytest.mark.parametrize("name,aux", [
    ("googlenet", "aux1"), pytest.param("inception_v3", "aux", marks=pytest.mark.slow)])
def test_heads_not_asked_for_cost_nothing(name, aux):
  clf = flax_abstract(name)
  x = jax.ShapeDtypeStruct((1, clf.input_size, clf.input_size, 3), jnp.float32)
  jaxprs = {h: jax.make_jaxpr(lambda c, x, h=h: c(x, heads=h))(clf, x)
            for h in [(aux,), ("logits",), ("logits", aux)]}
  # Convolutions and products (1x1 convolutions, an aux head's own among them, are products).
  work = {h: _count(j) + _count(j, "dot_general") for h, j in jaxprs.items()}
  assert work[(aux,)] < work[("logits",)] < work[("logits", aux)]


def test_batchnorm_statistics_come_from_the_same_pass_and_only_when_asked():
  """The statistics prior's inputs are recorded during the one forward pass
  (as many convolutions as without them), and a pass that does not ask
  for them is the same program as before they existed (no extra reduction)."""
  clf = flax_abstract("resnet18")
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)

  def program(needs):
    return str(jax.make_jaxpr(lambda c, x: c.outputs(x, needs))(clf, x))

  plain = program(Needs(("logits",)))
  stats = program(Needs(("logits",), batchnorm=True))
  bare = str(jax.make_jaxpr(lambda c, x: c.module.apply(c.variables, x, heads=("logits",)))(
      clf, x))
  assert plain == bare
  # ResNet-18: 20 convolutions and fc; the 1x1 shortcuts are products, and on
  # a CPU so are the strided convs and those with small outputs (at 64 px all
  # past layer1).
  assert _count(stats) == _count(plain)
  assert _count(stats, "dot_general") == _count(plain, "dot_general")
  assert _count(plain) + _count(plain, "dot_general") == 21
  batchnorms = 20
  assert _count(stats, "reduce_sum") >= _count(plain, "reduce_sum") + 2 * batchnorms
  outputs = jax.eval_shape(lambda c, x: c.outputs(x, Needs(("logits",), batchnorm=True)),
                           clf, x)
  assert len(outputs.batchnorm) == batchnorms
  assert str(jax.make_jaxpr(lambda c, x: c(x, heads=("logits",)))(clf, x)) == bare
  with pytest.raises(classgen_jax.InputError, match="has no BatchNorm layer"):
    dataclasses.replace(clf, variables={"params": clf.variables["params"]}).outputs(
        x, Needs(batchnorm=True))


def test_weights_are_jit_arguments_not_constants():
  # Random numbers of the abstract weights' shapes (no init to compile).
  abstract = flax_abstract("resnet18")
  rng = np.random.default_rng(0)
  clf = dataclasses.replace(abstract, variables=jax.tree_util.tree_map(
      lambda s: (0.01 * rng.standard_normal(s.shape)).astype(s.dtype), abstract.variables))
  x = jnp.zeros((1, 64, 64, 3))
  lowered = jax.jit(lambda c, x: c(x)["logits"]).lower(clf, x)
  n_leaves = len(jax.tree_util.tree_leaves(clf))
  assert len(jax.tree_util.tree_leaves(lowered.args_info)) == n_leaves + 1
  # The program text holds no large constant: weights come in as parameters.
  assert len(lowered.as_text()) < 200_000
  # A classifier with other weights reuses the same compiled program.
  other = clf.astype(jnp.float32)
  traces = []  # jit traces once per new signature: one trace is one program
  f = jax.jit(lambda c, x: traces.append(1) or c(x)["logits"])
  f(clf, x)
  f(other, x)
  assert len(traces) == 1


def test_normalisation_none_feeds_the_image_as_the_article_does():
  """``"none"``: the model sees [0, 1] images as they are (torch's model
  called on them straight), not ImageNet-normalised ones."""
  import torch

  from converters.reference.loop import to_nchw, torch_outputs
  from tests.helpers import tiny, tiny_torch
  x = np.random.default_rng(0).random((2, 40, 40, 3)).astype(np.float32)
  clf = tiny().with_normalisation("none")
  ours = np.asarray(clf(jnp.asarray(x))["logits"])
  with torch.no_grad():
    raw = tiny_torch()(to_nchw(x)).numpy()
    theirs = torch_outputs(tiny_torch(), to_nchw(x), normalisation="none")["logits"].numpy()
  np.testing.assert_allclose(ours, raw, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(theirs, raw)
  normalised = np.asarray(tiny()(jnp.asarray(x))["logits"])
  assert np.abs(normalised - ours).max() > 10 * np.abs(ours - raw).max()
  # A jitted function sees the setting (it is static, part of the pytree's
  # structure).
  assert jax.jit(lambda c, x: c(x)["logits"])(clf, jnp.asarray(x)).shape == (2, 1000)
  with pytest.raises(ValueError, match="normalisation must be 'imagenet' or 'none'"):
    torch_outputs(tiny_torch(), to_nchw(x), normalisation="article")


def test_public_surface():
  """The package's names, pinned: a new public name is a decision, made here."""
  assert sorted(classgen_jax.__all__) == [
      "Classifier", "Generation", "GenerationError", "ImageError", "InputError", "LABELS", "Layer",
      "LayerError",
      "Needs", "Outputs", "Progress", "UnknownClassError", "UnknownModelError", "WeightsError",
      "cache_dir", "class_index", "class_indices", "class_name", "devices", "engine",
      "generate", "imagenet", "load_classifier", "load_image", "metrics", "mixed_precision",
      "models", "objectives", "octave", "operations", "parameterisations", "read_classifier",
      "recipes", "save_classifier", "starts", "step", "transforms", "updates"]
  for name in classgen_jax.__all__:
    assert hasattr(classgen_jax, name), name
  import types
  public = {n for n, v in vars(classgen_jax).items()
            if not n.startswith("_") and not isinstance(v, types.ModuleType)}
  assert public == {n for n in classgen_jax.__all__
                    if not isinstance(getattr(classgen_jax, n), types.ModuleType)}


def test_an_eager_call_is_one_compiled_program():
  """Called outside a trace, the classifier compiles its pass as one
  program (eagerly, every layer's ops would compile on their own), with the
  same outputs and the same one-line errors."""
  clf = tiny()
  x = np.random.default_rng(5).random((2, 37, 41, 3)).astype(np.float32)  # a new shape
  compiles = []

  def listen(event, duration, **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    eager = clf(x)
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert len(compiles) == 1
  traced = jax.jit(lambda c, x: c.outputs(x, Needs(("logits",))).heads)(clf, jnp.asarray(x))
  np.testing.assert_array_equal(eager["logits"], traced["logits"])
  with pytest.raises(classgen_jax.InputError, match="add a batch axis"):
    clf(x[0])
  with pytest.raises(classgen_jax.InputError, match="convert with images / 255.0"):
    clf((x * 255).astype(np.uint8))
