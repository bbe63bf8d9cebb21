"""The convolutions' input gradients (``classgen_jax.models._convolutions``)
against torch, alone and through whole models.

Strided and stride-1 convolutions compute their input gradients without
XLA's default rules (a convolution of a zero-dilated gradient; the kernel
relabelled inside a loop). In float64 they must equal torch's autograd to
~1e-12.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax

import converters
from classgen_jax import models as C
from classgen_jax.models import _layers as L
from converters.reference.loop import torch_outputs
from tests.helpers import random_torch_model


def _nhwc(t):
  return t.detach().permute(0, 2, 3, 1).numpy()


# (height, width), kernel, stride, (top, bottom, left, right), in, out, groups:
# the ports' strided convs (stems, downsampling, 1x1 shortcuts, EfficientNet's
# 'SAME'-padded depthwise convs), a stride of 3, and stride-1 ones (3x3, 1x1,
# Inception's 1x7, depthwise, grouped, and padding wider than the kernel).
CONVS = [
    ((9, 10), 3, 1, (1, 1, 1, 1), 6, 4, 1),
    ((30, 28), 3, 1, (0, 0, 0, 0), 3, 4, 1),  # unpadded and wide: padded and cut on a CPU
    ((9, 8), 1, 1, (0, 0, 0, 0), 6, 5, 1),
    ((8, 11), (1, 7), 1, (0, 0, 3, 3), 4, 6, 1),
    ((10, 9), 5, 1, (2, 2, 2, 2), 6, 6, 6),
    ((7, 7), 3, 1, (1, 1, 1, 1), 4, 6, 2),
    ((6, 7), 1, 1, (1, 2, 2, 1), 3, 4, 1),
    ((15, 16), 7, 2, (3, 3, 3, 3), 3, 8, 1),
    ((11, 11), 3, 2, (0, 0, 0, 0), 3, 5, 1),
    ((9, 10), 3, 2, (1, 1, 1, 1), 6, 4, 1),
    ((9, 8), 1, 2, (0, 0, 0, 0), 6, 4, 1),
    ((12, 12), 3, 2, (0, 1, 0, 1), 6, 6, 6),
    ((11, 13), 5, 2, (1, 2, 2, 2), 4, 8, 4),
    ((10, 10), 3, 2, (1, 1, 1, 1), 6, 4, 2),
    ((10, 11), 3, 3, (1, 1, 0, 2), 2, 3, 1),
    # Small outputs on a CPU: one matrix product (``patches_conv``).
    ((5, 6), 3, 1, (1, 1, 1, 1), 120, 8, 1),
    ((7, 5), (1, 3), 1, (0, 0, 1, 1), 360, 6, 1),
]


# Depthwise convs (EfficientNet-Lite's; the drop-in computes them as taps).
DEPTHWISE = [
    ((13, 12), 5, 2, (1, 2, 1, 2), 5, 5, 5),
    ((9, 9), 3, 1, (1, 1, 1, 1), 7, 7, 7),
    ((8, 10), 5, 1, (2, 2, 2, 2), 3, 3, 3),
]


def _conv_id(case):
  (h, w), k, s, pad, cin, cout, groups = case
  k = k if isinstance(k, int) else "x".join(map(str, k))
  return f"{h}x{w}-k{k}s{s}-pad{''.join(map(str, pad))}-{cin}to{cout}-g{groups}"


def _rule(case):
  """The rule ``conv_general_dilated`` gives a case (on this backend)."""
  (h, w), k, s, (top, bottom, left, right), cin, cout, groups = case
  kh, kw = L.pair(k)
  return C.conv_rule((2, h, w, cin), (kh, kw, cin // groups, cout), (s, s),
                     ((top, bottom), (left, right)), feature_group_count=groups,
                     dimension_numbers=lax.conv_dimension_numbers(
                         (2, h, w, cin), (kh, kw, cin // groups, cout), C.NHWC))


def _drop_in(x, kernel, strides, padding, groups):
  """The models' entry point: dispatches to the rule each conv takes."""
  return C.conv_general_dilated(
      x, kernel, strides, padding, feature_group_count=groups,
      dimension_numbers=lax.conv_dimension_numbers(x.shape, kernel.shape, C.NHWC))


# The drop-in on every case; ``forward_grad_conv`` itself where the drop-in
# takes another rule (grouped convs, and those taken as one matrix product).
@pytest.mark.parametrize("case,conv", [
    *((case, _drop_in) for case in CONVS + DEPTHWISE),
    *((case, C.forward_grad_conv) for case in CONVS
      if 1 < case[-1] < case[-3] or _rule(case) == "patches"),
], ids=lambda v: _conv_id(v) if isinstance(v, tuple) else v.__name__.strip("_"))
def test_conv_rules_match_torch_float64(case, conv, x64):
  (h, w), k, s, (top, bottom, left, right), cin, cout, groups = case
  rng = np.random.default_rng(4)
  kh, kw = L.pair(k)
  x = rng.standard_normal((2, h, w, cin))
  kernel = rng.standard_normal((kh, kw, cin // groups, cout))
  padding = ((top, bottom), (left, right))

  @jax.jit
  def conv_and_grads(x, kernel, g):
    y, vjp = jax.vjp(lambda x, k: conv(x, k, (s, s), padding, groups), x, kernel)
    plain = lax.conv_general_dilated(x, kernel, (s, s), padding, dimension_numbers=C.NHWC,
                                     feature_group_count=groups)
    return y, plain, *vjp(g)

  out_shape = (2, *((n + a + b - q) // s + 1
                    for n, a, b, q in ((h, top, bottom, kh), (w, left, right, kw))), cout)
  g = rng.standard_normal(out_shape)
  y, plain, grad, kernel_grad = conv_and_grads(x, kernel, g)
  if conv is C.forward_grad_conv:  # its forward is XLA's convolution
    np.testing.assert_array_equal(np.asarray(y), np.asarray(plain))
  else:  # depthwise taps and matrix products add in another order
    np.testing.assert_allclose(np.asarray(y), np.asarray(plain), rtol=0, atol=1e-12)

  xt = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_(True)
  kt = torch.from_numpy(kernel).permute(3, 2, 0, 1).requires_grad_(True)
  yt = torch.nn.functional.conv2d(
      torch.nn.functional.pad(xt, (left, right, top, bottom)), kt, stride=s, groups=groups)
  yt.backward(torch.from_numpy(g).permute(0, 3, 1, 2))
  np.testing.assert_allclose(np.asarray(y), _nhwc(yt), rtol=0, atol=1e-12)
  np.testing.assert_allclose(np.asarray(grad), _nhwc(xt.grad), rtol=0, atol=1e-12)
  # The weight gradient is never needed, but asking for it must be right.
  np.testing.assert_allclose(np.asarray(kernel_grad), kt.grad.permute(2, 3, 1, 0).numpy(),
                             rtol=0, atol=1e-11)


def test_forward_grad_conv_under_jit_and_vmap():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.standard_normal((3, 2, 13, 12, 8)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((5, 5, 1, 8)), jnp.float32)

  def loss(x, kernel):
    y = C.forward_grad_conv(x, kernel, (2, 2), ((1, 2), (1, 2)), 8)
    return jnp.tanh(y).sum()

  grad = jax.grad(loss)
  eager = np.stack([np.asarray(grad(xi, kernel)) for xi in x])
  default = jax.vmap(jax.grad(lambda x: jnp.tanh(lax.conv_general_dilated(
      x, kernel, (2, 2), ((1, 2), (1, 2)), dimension_numbers=C.NHWC,
      feature_group_count=8)).sum()))(x)
  np.testing.assert_allclose(eager, np.asarray(default), rtol=1e-5, atol=1e-5)
  batched = jax.jit(jax.vmap(grad, in_axes=(0, None)))(x, kernel)
  np.testing.assert_allclose(np.asarray(batched), eager, rtol=1e-5, atol=1e-5)
  # Both gradients at once, under jit: the weight one through JAX's rule.
  _, kernel_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(x[0], kernel)
  assert kernel_grad.shape == kernel.shape and np.isfinite(kernel_grad).all()


def test_conv_general_dilated_keeps_flax_conv_as_it_was():
  """Same parameters and outputs; the custom rule only where it helps."""
  x = jnp.asarray(np.random.default_rng(6).standard_normal((2, 17, 17, 3)), jnp.float32)
  plain = nn.Conv(16, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)))
  ours = L.conv(16, 7, stride=2, padding=3)
  variables = plain.init(jax.random.key(0), x)
  assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(variables)
  np.testing.assert_array_equal(np.asarray(ours.apply(variables, x)),
                                np.asarray(plain.apply(variables, x)))
  custom = jax.make_jaxpr(jax.grad(lambda x: ours.apply(variables, x).sum()))(x)
  assert "custom_vjp_call" in str(custom)
  # Dense convs (any stride) and depthwise ones take a custom rule; other
  # grouped strided convs keep XLA's; 1x1 convs, and on a CPU strided dense
  # ones (not image stems) and stride-1 ones with small outputs, are matrix
  # products with JAX's own gradient.
  wide, small, image = (jnp.zeros((2, 40, 40, 32)), jnp.zeros((2, 5, 5, 128)),
                        jnp.zeros((2, 40, 40, 3)))
  for x, stride, groups, features, rule in (
      (image, 2, 1, 8, "_forward_grad_conv"), (wide, 1, 1, 8, "_forward_grad_conv"),
      (wide, 1, 1, 0, "dot"), (small, 1, 1, 8, "dot"), (wide, 2, 1, 8, "dot"),
      (wide, 2, 32, 32, "_depthwise_conv"), (wide, 1, 32, 32, "_depthwise_conv"),
      (wide, 2, 2, 8, None)):
    layer = (L.conv(features, 3, stride=stride, padding=1, groups=groups) if features
             else L.conv(8, 1))  # 1x1: a matrix product, JAX's own gradient
    layer_vars = jax.eval_shape(layer.init, jax.random.key(0), x)
    jaxpr = str(jax.make_jaxpr(jax.grad(
        lambda x, v, layer=layer: layer.apply(v, x).sum()))(x, layer_vars))
    case = (x.shape, stride, groups)
    assert ("custom_vjp_call" in jaxpr) == (rule not in (None, "dot")), case
    assert rule is None or f"name={rule}" in jaxpr or (
        rule == "dot" and "dot_general" in jaxpr and "conv_general" not in jaxpr), (case, rule)


@pytest.mark.parametrize("name,size", [
    pytest.param("googlenet", (67, 75), marks=pytest.mark.slow),  # ~15 s idle, 35 s loaded
    pytest.param("resnet18", (57, 64), marks=pytest.mark.slow),  # 8 s; the rules: below
])
def test_model_input_gradient_matches_torch_float64(name, size, x64):
  """Whole-model parity of the input gradient, on random weights (both models
  also run at 224 in ``test_torchvision_ports.py``; these sizes are odd)."""
  module = random_torch_model(name)
  images = np.random.default_rng(7).random((2, *size, 3))
  try:
    module.double()
    clf = converters.from_torchvision(module, dtype=jnp.float64)

    @jax.jit
    def logits_and_grad(clf, x):
      logits, vjp = jax.vjp(lambda x: clf(x, heads=("logits",))["logits"], x)
      return logits, vjp(jnp.zeros_like(logits).at[:, 7].set(1))[0]

    logits, grad = logits_and_grad(clf, images)
    xt = torch.from_numpy(images).permute(0, 3, 1, 2).requires_grad_(True)
    logits_torch = torch_outputs(module, xt, ("logits",))["logits"]
    (grad_torch,) = torch.autograd.grad(logits_torch[:, 7].sum(), xt)
  finally:
    module.float()
  np.testing.assert_allclose(np.asarray(logits), logits_torch.detach().numpy(), rtol=0,
                             atol=1e-9)
  assert np.abs(grad_torch.numpy()).max() > 1e-6, "trivial gradient"
  np.testing.assert_allclose(np.asarray(grad), _nhwc(grad_torch), rtol=0, atol=1e-9)


@pytest.mark.slow  # two compiles per model, ~20 s
@pytest.mark.parametrize("name,products", [
    ("efficientnet_lite0", False), ("googlenet", True), ("resnet50", True)])
def test_float32_input_gradient_agrees_with_xla_rules(name, products):
  """The custom convolution rules change no gradient beyond float32 rounding
  (EfficientNet-Lite0 on its real weights, the torchvision ports on random
  ones), under the generation loop's ``lax.scan``.

  Without a dense conv taken as a matrix product (``patches_conv``; GoogLeNet
  and ResNet-50 have some at this size), the gradients agree to 2e-5 of their
  scale. With one, its forward rounds differently from XLA's convolution,
  which can move an activation across a ReLU's kink and change the gradient
  behind it by a little more (0.2-0.3% in L2, measured): the logits agree to
  1e-5, the gradients to 2% in L2. (With seed 8 one such flip deep in Lite0
  changes a patch of its gradient by 0.3% too: that is rounding as well, but
  not what the strict bound looks at.)"""
  if name.startswith("efficientnet"):
    from classgen_jax import weights  # pylint: disable=g-import-not-at-top
    clf = weights.load_classifier(name)
  else:
    clf = converters.from_torchvision(random_torch_model(name), name=name)
  images = jnp.asarray(np.random.default_rng(1).random((2, 96, 112, 3)), jnp.float32)

  def logits_and_gradients():
    def loss(x, clf):
      return clf(x, heads=("logits",))["logits"][:, 7].sum()

    @jax.jit
    def two_steps(x, clf):  # as in an octave: the gradient inside a scan
      return lax.scan(lambda x, _: (x, jax.grad(loss)(x, clf)), x, None, length=2)[1]
    logits = jax.jit(lambda x, clf: clf(x, heads=("logits",))["logits"])(images, clf)
    return np.asarray(logits), np.asarray(two_steps(images, clf))

  def forward():
    return str(jax.make_jaxpr(lambda x, clf: clf(x, heads=("logits",)))(images, clf))
  with C.rules_off("patches"):
    without_products = forward()
  assert (forward() != without_products) == products  # the rule is in use, or not

  logits, ours = logits_and_gradients()
  with C.plain_convolutions():
    plain_logits, plain = logits_and_gradients()
  scale = np.abs(plain).max()
  assert scale > 0
  np.testing.assert_allclose(logits, plain_logits, rtol=0, atol=1e-5 * np.abs(plain_logits).max())
  if products:
    assert np.linalg.norm(ours - plain) < 0.02 * np.linalg.norm(plain)
  else:
    np.testing.assert_allclose(ours, plain, rtol=0, atol=2e-5 * scale)


def _revs(jaxpr, in_loop=False):
  """``(in a loop's body?, shape)`` of every ``rev`` (a flip) in a jaxpr,
  nested jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "rev":
      found.append((in_loop, eqn.invars[0].aval.shape))
    loop = in_loop or eqn.primitive.name in ("scan", "while")
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          found += _revs(sub.jaxpr, loop)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          found += _revs(sub, loop)
  return found


def test_an_octave_flips_its_kernels_once_before_its_loop(monkeypatch):
  """The input gradients' flipped, transposed kernels are computed before the
  octave's ``lax.scan``, not at each iteration (XLA does not hoist them), and
  the images are the same bit for bit. (Convs taken as matrix products flip
  nothing: none is, here.)"""
  from classgen_jax import objectives as obj  # pylint: disable=g-import-not-at-top
  from classgen_jax import octave, plans, starts, step, updates  # pylint: disable=g-import-not-at-top
  from classgen_jax._classifier import Classifier  # pylint: disable=g-import-not-at-top
  from classgen_jax.recipe import Octave, Recipe  # pylint: disable=g-import-not-at-top
  from tests.shared import tiny  # pylint: disable=g-import-not-at-top

  clf = tiny()
  recipe = Recipe("plain", starts.Uniform(), 40, (
      Octave(3, obj.class_logit(), updates.get("gradient"), (0.5, 0.5)),))
  plan = plans.plan(clf, recipe)[0]
  targets = jnp.array([1, 2])
  keys = starts.image_keys(0, [1, 2], [0, 0])
  init = starts.initial_images(recipe, keys)

  def revs_and_images():
    def octave_run(clf, state):  # a new function: traced afresh, not from JAX's cache
      return octave.run(plan, 3, clf, state, targets, keys)[0].canvas

    state = step.init_state(plan, jnp.array(init))
    with C.rules_off("patches"):
      revs = _revs(jax.make_jaxpr(octave_run)(clf, state).jaxpr)
      return revs, np.asarray(jax.jit(octave_run)(clf, state))

  hoisted, images = revs_and_images()
  monkeypatch.setattr(Classifier, "with_gradient_kernels", lambda self: self)
  in_loop, before = revs_and_images()
  # Every kernel wider than 1x1 is flipped (1x1 ones are matrix products).
  kernels = [v for v in jax.tree.leaves(clf.variables["params"]) if v.ndim == 4 and v.shape[0] > 1]
  assert len(in_loop) >= len(kernels) > 0 and all(inside for inside, _ in in_loop)
  assert hoisted and not any(inside for inside, _ in hoisted)
  np.testing.assert_array_equal(images, before)
  assert np.abs(images - np.asarray(init)).max() > 0  # the octave moved the pixels


def test_small_and_strided_dense_convs_are_matrix_products_on_a_cpu(monkeypatch):
  """``patches_help``: which convs of the ports are computed as one matrix
  product (at the benchmark's sizes), and never off a CPU."""
  same = ((1, 1), (1, 1))
  cases = [  # lhs, kernel, strides, padding, products?
      ((4, 5, 5, 512), (3, 3, 512, 512), (1, 1), same, True),  # ResNet-18 layer4 @160
      ((4, 10, 10, 256), (3, 3, 256, 512), (2, 2), same, True),  # its stride-2 entry
      ((4, 40, 40, 64), (3, 3, 64, 128), (2, 2), same, True),  # layer2's, larger
      ((4, 8, 8, 384), (1, 3, 384, 384), (1, 1), ((0, 0), (1, 1)), True),  # Inception 8x8
      ((4, 10, 10, 256), (3, 3, 256, 256), (1, 1), same, False),  # 10x10 output
      ((8, 7, 7, 32), (3, 3, 32, 128), (1, 1), same, False),  # GoogLeNet: a short product
      ((4, 160, 160, 3), (7, 7, 3, 64), (2, 2), ((3, 3), (3, 3)), False),  # stems
      ((4, 299, 299, 3), (3, 3, 3, 32), (2, 2), ((0, 0), (0, 0)), False),
      ((4, 5, 5, 512), (3, 3, 256, 512), (1, 1), same, False),  # grouped
  ]
  for lhs, kernel, strides, padding, products in cases:
    groups = lhs[-1] // kernel[2]
    assert C.patches_help(lhs, kernel, strides, padding, groups) == products, (lhs, kernel)
  # Turned off, the layer takes the rule it had before; every rule off, XLA's.
  lhs, kernel, strides, padding, _ = cases[0]
  dims = lax.conv_dimension_numbers(lhs, kernel, C.NHWC)
  assert C.conv_rule(lhs, kernel, strides, padding, dimension_numbers=dims) == "patches"
  with C.rules_off("patches"):
    assert C.conv_rule(lhs, kernel, strides, padding, dimension_numbers=dims) == "forward"
    with C.plain_convolutions():
      assert C.conv_rule(lhs, kernel, strides, padding, dimension_numbers=dims) is None
  with pytest.raises(ValueError, match="unknown convolution rules"):
    with C.rules_off("products"):
      pass
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert not any(C.patches_help(*case[:4]) for case in cases)


def test_a_wide_unpadded_conv_is_computed_padded_and_cut_on_a_cpu():
  """XLA:CPU runs unpadded stride-1 convs 2.5-5x slower than padded ones:
  ``forward_conv`` pads wide ones by a pixel and cuts; the values agree."""
  rng = np.random.default_rng(9)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 5, 4)), jnp.float32)
  for side, padded in ((30, True), (20, False)):
    x = jnp.asarray(rng.standard_normal((2, side, side + 2, 5)), jnp.float32)
    conv = lambda x: C.forward_conv(x, kernel, (1, 1), ((0, 0), (0, 0)))  # noqa: E731
    jaxpr = str(jax.make_jaxpr(conv)(x))
    assert ("padding=((1, 1), (1, 1))" in jaxpr) == padded, side
    plain = lax.conv_general_dilated(x, kernel, (1, 1), ((0, 0), (0, 0)), dimension_numbers=C.NHWC)
    assert conv(x).shape == plain.shape
    np.testing.assert_allclose(np.asarray(conv(x)), np.asarray(plain), rtol=1e-5, atol=1e-5)
