"""Vision Transformer (Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words"),
as torchvision builds it (``torchvision.models.VisionTransformer``).

Module names mirror torchvision's (``conv_proj``, ``class_token``,
``encoder.pos_embedding``, ``encoder.layers.encoder_layer_3.self_attention``
with its fused ``in_proj_weight``, ``mlp.0``/``mlp.3`` as ``mlp_0``/``mlp_3``,
``encoder.ln``, ``heads.head``), so the generic converter maps every tensor
by name. LayerNorm eps is 1e-6, the MLP's GELU is the exact (erf) one, and
dropout is off (inference).

Input size. torchvision's ViT takes only its ``image_size`` (224); other
sides are what recipes show models (Lucid's 236 px, glances of 32). Here the
patches stay 16x16 pixels at any size, as a convolutional model's receptive
fields do, and the position embeddings are resized to the
``(H // 16, W // 16)`` grid of patches with torchvision's own
``interpolate_embeddings`` rule
(bicubic, ``align_corners=True``; timm's ``dynamic_img_size`` resizes them
too, antialiased, corners not aligned), so a layer's map has a position per
patch and ``objectives.neuron(layer, c, y, x)`` means the patch at row
``y``, column ``x``. At the native size nothing is resized: the port is
torchvision's model. A side that is not a multiple of 16 loses its last
``side % 16`` rows or columns, as torch's strided ``conv_proj`` does (they
get no gradient); a side under 16 px is an ``InputError``. Resizing the
image to 224 inside the model was the other choice; it would change the
pixel scale a recipe draws at with every view size, which no other port
does.

Named activations (``classgen_jax.activations``): a module whose output is
a token sequence ``(N, 1 + h * w, C)`` is read as its patch tokens' map
``(N, h, w, C)`` under its torch name, and its class token ``(N, C)`` under
the name plus ``.class_token``. Each attention head's output before
``out_proj`` (softmax(q k^T / sqrt(d)) v, ``(N, 1 + h * w, C / heads)``) is
the module ``self_attention.head_<k>``, which torch does not have (its
attention is fused); ``mlp.1`` is the GELU's output.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from classgen_jax.models import _layers as L

_EPS = 1e-6
_CUBIC = -0.75  # torch's bicubic coefficient (PIL and jax.image use -0.5)


def bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
  """torch's 1-D bicubic interpolation with ``align_corners=True`` as a
  ``(size_out, size_in)`` float64 matrix (taps past the ends clamped to them,
  as ``F.interpolate`` does)."""

  def near(t):  # |t| <= 1
    return ((_CUBIC + 2) * t - (_CUBIC + 3)) * t * t + 1

  def far(t):  # 1 < |t| < 2
    return ((_CUBIC * t - 5 * _CUBIC) * t + 8 * _CUBIC) * t - 4 * _CUBIC

  matrix = np.zeros((size_out, size_in))
  scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
  for i in range(size_out):
    real = scale * i
    index = math.floor(real)
    t = real - index
    for k, weight in enumerate((far(t + 1), near(t), near(1 - t), far(2 - t))):
      matrix[i, min(max(index - 1 + k, 0), size_in - 1)] += weight
  return matrix


def patch_map(tokens, grid: tuple[int, int]):
  """The patch tokens of a ``(N, 1 + h * w, C)`` sequence as a ``(N, h, w, C)``
  map (the class token, first, left out)."""
  return tokens[:, 1:].reshape(tokens.shape[0], *grid, tokens.shape[-1])


def _layer_norm(dtype: Any, name: str) -> nn.LayerNorm:
  # Two-pass variance, as torch's: the one-pass E[x^2] - E[x]^2 loses
  # float32 digits on the residual stream's large means.
  return nn.LayerNorm(epsilon=_EPS, use_fast_variance=False, dtype=dtype, name=name)


class PatchProjection(nn.Module):
  """torch's ``Conv2d(3, C, p, stride=p)`` as a product of each whole patch's
  pixels with the kernel (exact: the windows do not overlap); its kernel is
  HWIO as every port's. Returns the ``(N, H // p, W // p, C)`` map."""
  features: int
  patch_size: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    p = self.patch_size
    n, height, width, channels = x.shape
    rows, columns = height // p, width // p
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (p, p, channels, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    patches = x[:, :rows * p, :columns * p].reshape(n, rows, p, columns, p, channels)
    patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(n, rows, columns, -1)
    return patches @ kernel.reshape(-1, self.features) + bias


class AttentionHead(nn.Module):
  """One head's output before ``out_proj``: a module only so that it is a
  named activation (``self_attention.head_<k>``)."""

  @nn.compact
  def __call__(self, x):
    return x


class GELU(nn.Module):
  """torch's ``nn.GELU()`` (exact, erf), the MLP's ``mlp.1``."""

  @nn.compact
  def __call__(self, x):
    return nn.gelu(x, approximate=False)


class SelfAttention(nn.Module):
  """torch's ``nn.MultiheadAttention(C, heads, batch_first=True)`` on ``(x, x, x)``:
  fused ``in_proj_weight`` ``(3C, C)`` (q, k, v rows) and ``in_proj_bias``,
  then ``out_proj`` on the heads' outputs side by side."""
  num_heads: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    n, length, width = x.shape
    heads, depth = self.num_heads, width // self.num_heads
    weight = self.param("in_proj_weight", nn.initializers.xavier_uniform(), (3 * width, width))
    bias = self.param("in_proj_bias", nn.initializers.zeros, (3 * width,))
    x, weight, bias = nn.dtypes.promote_dtype(x, weight, bias, dtype=self.dtype)
    qkv = (x @ weight.T + bias).reshape(n, length, 3, heads, depth)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) / jnp.sqrt(jnp.asarray(depth, q.dtype))
    out = jnp.einsum("nhqk,nkhd->nqhd", nn.softmax(logits, axis=-1), v)
    out = [AttentionHead(name=f"head_{h}")(out[:, :, h]) for h in range(heads)]
    return nn.Dense(width, dtype=self.dtype, name="out_proj")(jnp.concatenate(out, axis=-1))


class EncoderBlock(nn.Module):
  """torchvision's ``EncoderBlock``: pre-norm attention and MLP, each residual."""
  num_heads: int
  mlp_dim: int
  dtype: Any = None

  @nn.compact
  def __call__(self, inputs):
    x = _layer_norm(self.dtype, "ln_1")(inputs)
    x = SelfAttention(self.num_heads, self.dtype, name="self_attention")(x) + inputs
    y = _layer_norm(self.dtype, "ln_2")(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_0")(y)
    y = GELU(name="mlp_1")(y)
    y = nn.Dense(inputs.shape[-1], dtype=self.dtype, name="mlp_3")(y)
    return x + y


class EncoderLayers(nn.Module):
  """torch's ``encoder.layers`` ``Sequential`` of ``encoder_layer_<i>``."""
  num_layers: int
  num_heads: int
  mlp_dim: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dtype, name=f"encoder_layer_{i}")(x)
    return x


class Encoder(nn.Module):
  """torchvision's ``Encoder``: position embeddings (resized to ``grid``
  away from the native one), the blocks, a final LayerNorm."""
  native_grid: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dtype: Any = None

  @nn.compact
  def __call__(self, tokens, grid: tuple[int, int]):
    width = tokens.shape[-1]
    position = self.param("pos_embedding", nn.initializers.normal(0.02),
                          (1, 1 + self.native_grid**2, width))
    tokens, position = nn.dtypes.promote_dtype(tokens, position, dtype=self.dtype)
    if tuple(grid) != (self.native_grid,) * 2:
      rows, columns = (jnp.asarray(bicubic_matrix(self.native_grid, side), position.dtype)
                       for side in grid)
      patches = position[0, 1:].reshape(self.native_grid, self.native_grid, width)
      patches = jnp.einsum("yi,xj,ijc->yxc", rows, columns, patches).reshape(1, -1, width)
      position = jnp.concatenate([position[:, :1], patches], axis=1)
    x = EncoderLayers(self.num_layers, self.num_heads, self.mlp_dim, self.dtype,
                      name="layers")(tokens + position)
    return _layer_norm(self.dtype, "ln")(x)


class Heads(nn.Module):
  """torchvision's ``heads`` ``Sequential`` (``head``, a linear layer)."""
  num_classes: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)


class VisionTransformer(nn.Module):
  """Maps NHWC images in [0, 1] to ``{"logits"}`` (ImageNet mean/std inside).

  Attributes:
    image_size: the native side (the position embeddings' grid times
      ``patch_size``); other sides resize the embeddings (module doc).
    patch_size: side of a patch (``vit_b_16``: 16).
    num_layers, num_heads, hidden_dim, mlp_dim: the encoder's depth, heads
      per block, token width and MLP width (``vit_b_16``: 12, 12, 768, 3072).
    num_classes: size of the head.
    dtype: computation dtype (None: from the inputs and parameters).
  """
  image_size: int = 224
  patch_size: int = 16
  num_layers: int = 12
  num_heads: int = 12
  hidden_dim: int = 768
  mlp_dim: int = 3072
  num_classes: int = 1000
  dtype: Any = None

  @property
  def heads(self) -> tuple[str, ...]:
    return ("logits",)

  def spatial_size(self, size: int, head: str) -> int:
    """Patches along a side of ``size`` px (the token grid's side)."""
    return size // self.patch_size

  def grid(self, height: int, width: int) -> tuple[int, int]:
    """The ``(rows, columns)`` of patches of an image."""
    return height // self.patch_size, width // self.patch_size

  @nn.compact
  def __call__(self, images, heads: tuple[str, ...] = ("logits",)):
    x = PatchProjection(self.hidden_dim, self.patch_size, self.dtype,
                        name="conv_proj")(L.normalize(images))
    n, rows, columns, width = x.shape
    token = self.param("class_token", nn.initializers.zeros, (1, 1, width))
    x, token = nn.dtypes.promote_dtype(x, token, dtype=self.dtype)
    tokens = jnp.concatenate(
        [jnp.broadcast_to(token, (n, 1, width)), x.reshape(n, rows * columns, width)], axis=1)
    x = Encoder(self.image_size // self.patch_size, self.num_layers, self.num_heads,
                self.mlp_dim, self.dtype, name="encoder")(tokens, (rows, columns))
    return {"logits": Heads(self.num_classes, self.dtype, name="heads")(x[:, 0])}
