"""Named activations: torch's module names and shapes, recorded only when
asked, the compiled pass cut after the deepest layer read."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
import torch

import converters
from classgen_jax import Needs
from classgen_jax import objectives as obj
from tests.helpers import TINY_WIDTH, random_torch_model, tiny, tiny_torch


def test_layers_are_the_torch_modules_in_pass_order_with_their_shapes():
  layers = tiny().layers()
  names = [layer.name for layer in layers]
  torch_modules = dict(tiny_torch().named_modules())
  assert all(name in torch_modules for name in names), set(names) - set(torch_modules)
  assert names[:3] == ["conv1", "bn1", "layer1.0.conv1"] and names[-1] == "fc"
  # A Sequential is its last member's output, listed right after it.
  index = names.index("layer2.0")
  assert names[index + 1] == "layer2" and layers[index].shape == layers[index + 1].shape
  assert dict(layers)["layer2.0.downsample"] == dict(layers)["layer2.0.downsample.1"]
  assert dict(layers)["conv1"] == (112, 112, TINY_WIDTH) and dict(layers)["fc"] == (1000,)
  shapes = {}

  def record(name):
    def hook(module, inputs, output):
      shapes.setdefault(name, tuple(output.shape[1:]))
    return hook

  hooks = [torch_modules[n].register_forward_hook(record(n)) for n in names]
  with torch.no_grad():
    tiny_torch()(torch.zeros(1, 3, 224, 224))
  for hook in hooks:
    hook.remove()
  for name, shape in layers:  # torch's NCHW
    assert shapes[name] == (shape[-1], *shape[:-1]), name


@pytest.mark.slow  # a random GoogLeNet: 4 s
def test_the_other_ports_name_their_layers_as_torch_does():
  clf = converters.from_torchvision(random_torch_model("googlenet"), name="googlenet")
  names = [layer.name for layer in clf.layers()]
  assert {"inception4a", "inception4a.branch2.1", "inception4a.branch2", "conv1.bn",
          "aux1.fc2"} <= set(names)
  assert set(names) <= set(dict(random_torch_model("googlenet").named_modules()))


def test_layers_are_recorded_only_when_asked_and_in_the_one_pass():
  clf = tiny()
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)

  def program(needs):
    return str(jax.make_jaxpr(lambda c, x: c.outputs(x, needs))(clf, x))

  bare = str(jax.make_jaxpr(lambda c, x: c.module.apply(c.variables, x, heads=("logits",)))(
      clf, x))
  assert program(Needs(("logits",))) == bare
  recorded = program(Needs(("logits",), layers=("layer1", "layer3.0.conv2")))
  assert recorded.count("conv_general_dilated") == bare.count("conv_general_dilated")


def test_the_compiled_gradient_stops_after_the_deepest_layer_read():
  clf, x = tiny(), jnp.zeros((1, 64, 64, 3))

  def convolutions(objective):
    def value(x, c):
      return objective(c.outputs(x, objective.needs), x, jnp.zeros(1, jnp.int32)).sum()
    text = jax.jit(jax.grad(value)).lower(x, clf).compile().as_text()
    return text.count(" convolution(") + text.count(" dot(")  # some convs are products

  early, late = convolutions(obj.channel("layer1.0", 0)), convolutions(obj.class_logit())
  assert 0 < early < late / 2, (early, late)


@pytest.mark.slow  # the real weights and the torch package's model: 3 s
def test_efficientnet_lite_layers_are_its_torch_package_modules():
  from classgen_jax import weights  # pylint: disable=g-import-not-at-top
  from tests.test_efficientnet_lite import _torch_model  # pylint: disable=g-import-not-at-top
  names = [layer.name for layer in weights.load_classifier("efficientnet_lite0").layers()]
  assert {"_conv_stem", "_blocks.0", "_blocks.15._project_conv", "_conv_head", "_fc"} <= set(names)
  assert set(names) <= set(dict(_torch_model("efficientnet_lite0", torch.float32).named_modules()))
