"""The Vision Transformer port (``classgen_jax.models.vit``) against
torchvision's, on random weights whose constant initialisations (LayerNorm
affine, biases, class token, head) are randomised so that a swapped mapping
shows: logits, input gradients and every named activation in float64, at
the native size and at others (position embeddings resized as torchvision's
``interpolate_embeddings`` does); the layer terms against their torch twins
(forward hooks, and a pre-hook that computes each attention head); the
state dict's names and shapes; the weights path; one-line errors.

``vit_b_16`` itself runs in the slow pass (its parity is also in
``test_torchvision_ports.py``); the default pass uses ``helpers.TINY_VIT``.
"""

from __future__ import annotations

import dataclasses
import urllib.error

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

import classgen_jax
import converters
from classgen_jax import Needs, engine, recipes
from classgen_jax import objectives as obj
from classgen_jax.models import VisionTransformer
from classgen_jax.models.vit import bicubic_matrix
from converters.reference import loop
from converters.reference import objectives as torch_objectives
from converters.reference import vit as torch_vit
from tests.helpers import TINY_VIT, random_torch_model, tiny, tiny_vit_torch

# Native (32 px: 4x4 patches) and a non-square side that resizes the
# position embeddings and leaves rows and columns past the last patch.
SIZES = [(32, 32), (44, 30)]
_BLOCK = "encoder.layers.encoder_layer_{}"


@pytest.fixture
def tiny64(x64):
  """The tiny ViT in float64, torch's and ours."""
  module = tiny_vit_torch().double()
  try:
    yield module, converters.from_torchvision(module, dtype=jnp.float64)
  finally:
    module.float()


def _images(size, n=2, seed=1):
  return np.random.default_rng(seed).random((n, *size, 3))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_logits_and_input_gradient_match_torch_in_float64(tiny64, size):
  module, clf = tiny64
  images = _images(size)

  def logit(x, c):
    logits = c(x, heads=("logits",))["logits"]
    return logits[:, 7].sum(), logits

  (_, ours), grad = jax.jit(jax.value_and_grad(logit, has_aux=True))(jnp.asarray(images), clf)
  x = loop.to_nchw(images).requires_grad_(True)
  theirs = loop.torch_outputs(module, x)["logits"]
  (their_grad,) = torch.autograd.grad(theirs[:, 7].sum(), x)
  assert np.abs(theirs.detach().numpy()).max() > 0.1, "trivial model"
  assert np.abs(np.asarray(ours) - theirs.detach().numpy()).max() <= 1e-12
  np.testing.assert_allclose(np.asarray(grad), their_grad.permute(0, 2, 3, 1).numpy(),
                             rtol=0, atol=1e-12)


def test_the_reference_is_torchvisions_model_and_interpolation():
  """At the native size the reference is ``module(x)`` itself; elsewhere its
  embeddings are ``interpolate_embeddings``'; the port's bicubic matrices
  are ``F.interpolate``'s (up, down, to one position)."""
  module = tiny_vit_torch()
  state = {"encoder.pos_embedding": module.encoder.pos_embedding.detach().double()}
  want = torchvision.models.vision_transformer.interpolate_embeddings(56, 8, dict(state))
  got = torch_vit.position_embedding(state["encoder.pos_embedding"], (7, 7))
  torch.testing.assert_close(got, want["encoder.pos_embedding"], rtol=0, atol=1e-15)
  grid = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 4, 4)))
  for rows, columns in ((7, 5), (3, 2), (1, 1), (4, 4)):
    want = torch.nn.functional.interpolate(grid, size=(rows, columns), mode="bicubic",
                                           align_corners=True)[0].numpy()
    got = np.einsum("yi,xj,cij->cyx", bicubic_matrix(4, rows), bicubic_matrix(4, columns),
                    grid[0].numpy())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14, err_msg=f"{rows}x{columns}")
  attention = module.encoder.layers[0].self_attention
  x = torch.randn(2, 17, TINY_VIT["hidden_dim"], generator=torch.Generator().manual_seed(0))
  heads = torch_vit.attention_heads(attention, x)  # (N, heads, T, d)
  recombined = attention.out_proj(heads.transpose(1, 2).flatten(2))
  with torch.no_grad():
    torch.testing.assert_close(recombined, attention(x, x, x, need_weights=False)[0])


def test_layers_are_torch_modules_heads_and_class_tokens_with_torchs_values(tiny64):
  """Every named activation equals what the reference path's hooks read on
  torchvision's own forward pass (token maps NCHW in torch)."""
  module, clf = tiny64
  layers = clf.layers()
  names = [layer.name for layer in layers]
  block = _BLOCK.format(1)
  assert names[0] == "conv_proj" and names[-2:] == ["heads.head", "heads"]
  assert {f"{block}", f"{block}.class_token", f"{block}.mlp", f"{block}.mlp.1",
          f"{block}.self_attention.head_1", f"{block}.self_attention.head_1.class_token",
          "encoder.layers", "encoder.ln", "encoder"} <= set(names)
  torch_modules = set(dict(module.named_modules()))
  own = [n for n in names if ".head_" in n or n.endswith(".class_token")]
  assert set(names) - set(own) <= torch_modules, set(names) - set(own) - torch_modules
  shapes = dict(layers)
  assert shapes[block] == (4, 4, 16) and shapes[f"{block}.class_token"] == (16,)
  assert shapes[f"{block}.self_attention.head_0"] == (4, 4, 8)
  assert shapes[f"{block}.mlp.1"] == (4, 4, 32) and shapes["heads.head"] == (1000,)

  images = _images((32, 32))
  ours = jax.jit(lambda c, x: c.outputs(x, Needs(layers=tuple(names))).layers)(clf, images)
  with torch.no_grad():
    theirs = loop.torch_pass(module, loop.to_nchw(images), Needs(layers=tuple(names))).layers
  for name in names:
    want = theirs[name].numpy()
    want = want.transpose(0, 2, 3, 1) if want.ndim == 4 else want
    assert ours[name].shape == want.shape, name
    np.testing.assert_allclose(np.asarray(ours[name]), want, rtol=0, atol=1e-12, err_msg=name)


_TERMS = (obj.channel(_BLOCK.format(0), 5)
          + obj.neuron(f"{_BLOCK.format(1)}.mlp.1", 7, y=1, x=2)
          + obj.direction("encoder.ln", tuple(np.linspace(-1, 1, 16)), cosine_power=1.0)
          - 0.5 * obj.layer(f"{_BLOCK.format(0)}.self_attention.head_1")
          + obj.channel(f"{_BLOCK.format(1)}.self_attention.head_0", 3)
          + obj.neuron(f"{_BLOCK.format(1)}.class_token", 4)
          + obj.channel(f"{_BLOCK.format(0)}.self_attention.out_proj", 2)
          + obj.channel(f"{_BLOCK.format(0)}.mlp", 9) + obj.channel("conv_proj", 1)
          + obj.diversity(_BLOCK.format(1), 2))


def test_layer_terms_match_their_torch_twins(tiny64):
  """Channel, neuron (a patch, a class token), direction, mean square,
  attention heads and diversity: values and input gradients, float64, at a
  size whose token maps are 5x3 patches (embeddings resized, a remainder)."""
  module, clf = tiny64
  images, targets = _images(SIZES[1]), np.array([3, 50])

  def value(x, c):
    values = _TERMS(c.outputs(x, _TERMS.needs), x, jnp.asarray(targets))
    return values.sum(), values

  (_, ours), grad = jax.jit(jax.value_and_grad(value, has_aux=True))(jnp.asarray(images), clf)
  x = loop.to_nchw(images).requires_grad_(True)
  outputs = loop.torch_pass(module, x, _TERMS.needs)
  theirs = torch_objectives.objective(_TERMS, outputs, x, torch.as_tensor(targets))
  (their_grad,) = torch.autograd.grad(theirs.sum(), x)
  np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-10, atol=1e-10)
  their_grad = their_grad.permute(0, 2, 3, 1).numpy()
  assert np.abs(their_grad).max() > 1e-6, "trivial gradient"
  np.testing.assert_allclose(np.asarray(grad), their_grad, rtol=0,
                             atol=1e-10 * np.abs(their_grad).max())
  assert not np.asarray(grad)[:, :, 24:].any()  # past the last patch: none, as in torch


def test_the_state_dict_maps_by_rule_and_is_checked():
  state = tiny_vit_torch().state_dict()
  assert converters.flax_path("class_token") == ("params", "class_token")
  assert converters.flax_path("encoder.pos_embedding") == ("params", "encoder", "pos_embedding")
  assert converters.flax_path("encoder.layers.encoder_layer_1.self_attention.in_proj_weight") == (
      "params", "encoder", "layers", "encoder_layer_1", "self_attention", "in_proj_weight")
  assert converters.flax_path(f"{_BLOCK.format(1)}.mlp.3.weight")[-2:] == ("mlp_3", "<weight>")
  module = VisionTransformer(**TINY_VIT)
  variables = converters.convert_state_dict(state, module, input_size=32)
  layer = variables["params"]["encoder"]["layers"]["encoder_layer_1"]
  np.testing.assert_array_equal(  # torch's (out, in), as torch's own parameter
      layer["self_attention"]["in_proj_weight"],
      state["encoder.layers.encoder_layer_1.self_attention.in_proj_weight"].numpy())
  np.testing.assert_array_equal(layer["mlp_0"]["kernel"],
                                state["encoder.layers.encoder_layer_1.mlp.0.weight"].numpy().T)
  np.testing.assert_array_equal(variables["params"]["conv_proj"]["kernel"],
                                state["conv_proj.weight"].numpy().transpose(2, 3, 1, 0))
  missing = {k: v for k, v in state.items() if not k.endswith("in_proj_bias")}
  with pytest.raises(converters.ConversionError, match="missing Flax variables .*in_proj_bias"):
    converters.convert_state_dict(missing, module, input_size=32)
  wrong = {**state, "encoder.pos_embedding": torch.zeros(1, 26, 16)}
  with pytest.raises(converters.ConversionError,
                     match=r"encoder.pos_embedding: shape \(1, 26, 16\)"):
    converters.convert_state_dict(wrong, module, input_size=32)


def test_configuration_is_read_off_torch_and_unsupported_variants_refused():
  clf = converters.from_torchvision(tiny_vit_torch())
  assert clf.name == "vit" and clf.input_size == 32
  assert classgen_jax.models.module_config(clf.module) == {**TINY_VIT, "num_classes": 1000}
  with pytest.raises(converters.ConversionError, match="representation_size"):
    converters.from_torchvision(torchvision.models.VisionTransformer(
        **TINY_VIT, representation_size=8))
  stem = [torchvision.models.vision_transformer.ConvStemConfig(8, 3, 2)]
  with pytest.raises(converters.ConversionError, match="convolutional stem"):
    converters.from_torchvision(torchvision.models.VisionTransformer(
        **{**TINY_VIT, "patch_size": 2}, conv_stem_configs=stem))


def test_sizes_under_a_patch_are_one_line_errors():
  clf = converters.from_torchvision(tiny_vit_torch())
  assert clf.min_input_size() == 8
  with pytest.raises(classgen_jax.InputError) as info:
    clf(np.zeros((1, 7, 40, 3), np.float32))
  assert "needs images of at least 8x8 (native 32x32), got 7x40" in str(info.value)
  assert "\n" not in str(info.value)


def test_normalisation_none_feeds_the_image_as_it_is():
  clf = converters.from_torchvision(tiny_vit_torch()).with_normalisation("none")
  images = _images((32, 32)).astype(np.float32)
  with torch.no_grad():
    want = loop.torch_outputs(tiny_vit_torch(), loop.to_nchw(images), normalisation="none")
  np.testing.assert_allclose(np.asarray(clf(images)["logits"]), want["logits"].numpy(),
                             rtol=0, atol=1e-5)


def test_mixed_precision_computes_in_bfloat16_close_to_float32():
  clf = converters.from_torchvision(tiny_vit_torch())
  images = _images((32, 32)).astype(np.float32)
  want = np.asarray(clf(images)["logits"])
  got = classgen_jax.mixed_precision(clf)(images)["logits"]
  assert got.dtype == jnp.bfloat16
  assert np.abs(np.asarray(got, np.float32) - want).max() < 0.05 * np.abs(want).max()


@pytest.mark.parametrize("weights,file", [(None, "vit_b_16-c867db91.pth"),
                                          ("IMAGENET1K_SWAG_E2E_V1", "vit_b_16_swag-9ac1b537")])
def test_offline_torchvision_weights_are_one_line_saying_how_to_pass_a_pth(
    weights, file, tmp_path, monkeypatch):
  def offline(*args, **kwargs):
    raise urllib.error.URLError("no network")

  monkeypatch.setenv("CLASSGEN_JAX_CACHE", str(tmp_path))
  monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
  with pytest.raises(classgen_jax.WeightsError) as info:
    classgen_jax.load_classifier("vit_b_16", weights=weights)
  assert "\n" not in str(info.value) and f"weights='/path/to/{file}" in str(info.value)


# ----------------------------------------------------------------------------
# vit_b_16 itself (slow: 86 M weights).


@pytest.mark.slow
def test_vit_b_16_pth_converts_caches_and_matches_torch(tmp_path, monkeypatch):
  """A local ``.pth`` (random weights: torchvision's cannot be fetched here),
  converted, cached and read back; a 384 px checkpoint builds a 384 px model."""
  monkeypatch.setenv("CLASSGEN_JAX_CACHE", str(tmp_path / "cache"))
  module = random_torch_model("vit_b_16")
  path = tmp_path / "vit_b_16-random.pth"
  torch.save(module.state_dict(), path)
  clf = classgen_jax.load_classifier("vit_b_16", weights=path)
  assert clf.name == "vit_b_16" and clf.input_size == 224
  assert list((tmp_path / "cache").glob("vit_b_16-sha256-*.safetensors"))
  assert sum(n for _, n in clf.parameter_counts()) == 86_567_656  # torchvision's meta
  images = _images((224, 224), n=1).astype(np.float32)
  with torch.no_grad():
    want = loop.torch_outputs(module, loop.to_nchw(images))["logits"].numpy()
  def not_again(*args, **kwargs):
    raise AssertionError("converted again rather than read from the cache")

  classgen_jax.weights.register_converter("torchvision", not_again)
  try:
    cached = classgen_jax.load_classifier("vit_b_16", weights=path)
  finally:
    classgen_jax.weights.register_converter("torchvision", converters.convert_named)
  for loaded in (clf, cached):
    got = np.asarray(loaded(images)["logits"])
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
  state = torchvision.models.vision_transformer.interpolate_embeddings(
      384, 16, module.state_dict())
  big = converters.build_torch("vit_b_16", state)
  assert big.image_size == 384 and converters.from_torchvision(big).input_size == 384


@pytest.mark.slow
@pytest.mark.parametrize("objective", [
    None, obj.channel("encoder.layers.encoder_layer_5", 10),
    obj.channel("encoder.layers.encoder_layer_8.self_attention.head_3", 20)],
    ids=["class", "channel", "head"])
def test_vit_b_16_random_weight_smoke_runs_raise_the_objective(objective):
  """Lucid's recipe at 5% of its steps (26 Adam steps, 236 px views: a 14x14
  grid, the native one) on a random vit_b_16: runs, stays finite, and the
  objective rises. Random weights only: what the images look like on real
  weights is not measured here (docs/design.md)."""
  clf = converters.from_torchvision(random_torch_model("vit_b_16"))
  recipe = recipes.get("lucid", steps_scale=0.05)
  if objective is not None:
    recipe = dataclasses.replace(recipe, octaves=tuple(
        dataclasses.replace(o, objective=objective) for o in recipe.octaves))
  result = engine.generate(clf, [1], recipe, seed=0)
  trace = np.asarray(result.trace.objective)[:, 0]
  print(f"\n{recipe.name} {objective}: objective {trace[:3].mean():.3f} -> "
        f"{trace[-3:].mean():.3f} over {len(trace)} steps, {result.seconds:.0f} s")
  assert np.isfinite(result.images).all() and np.isfinite(trace).all()
  assert trace[-3:].mean() > trace[:3].mean() + 0.1 * np.abs(trace[:3]).mean()


def test_the_default_recipe_of_a_model_without_batchnorm_needs_none():
  """``object`` reads BatchNorm statistics, which a ViT has none of: its
  default is MACO's, and a generate without a recipe runs."""
  vit, resnet = converters.from_torchvision(tiny_vit_torch()), tiny()
  assert recipes.default_for(resnet) == recipes.DEFAULT == "object"
  assert recipes.default_for(vit) == recipes.DEFAULT_WITHOUT_BATCHNORM == "maco"
  assert not recipes.get(recipes.default_for(vit)).octaves[0].objective.needs.batchnorm
