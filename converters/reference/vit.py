"""torchvision's Vision Transformer on the reference path: at any input size,
and its named activations as ``classgen_jax`` reads them.

``forward`` is torchvision's model at its ``image_size``; at other sizes it
resizes the position embeddings with torchvision's ``interpolate_embeddings``
arithmetic (bicubic, ``align_corners=True``; the grid need not be square)
and runs the same modules, so forward hooks on them still fire. ``hook``
records a layer of ``classgen_jax.activations``' naming: a token sequence's
patch tokens as an NCHW map or its class token, and an attention head's
output, which torch's fused attention never forms, computed from the
attention's input by a pre-hook.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch.nn import functional as F

CLASS_TOKEN = ".class_token"


def position_embedding(embedding: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
  """``(1, 1 + g * g, C)`` embeddings for a ``grid`` of patches, the class
  token's kept (``torchvision.models.vision_transformer.interpolate_embeddings``)."""
  _, length, width = embedding.shape
  side = math.isqrt(length - 1)
  if tuple(grid) == (side, side):
    return embedding
  patches = embedding[:, 1:].permute(0, 2, 1).reshape(1, width, side, side)
  patches = F.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=True)
  return torch.cat([embedding[:, :1], patches.reshape(1, width, -1).permute(0, 2, 1)], dim=1)


def forward(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
  """Logits of a torchvision ``VisionTransformer`` for normalised NCHW ``x``
  of any size of at least one patch."""
  n, _, height, width = x.shape
  if height == width == module.image_size:
    return module(x)
  p = module.patch_size
  tokens = module.conv_proj(x).flatten(2).transpose(1, 2)
  tokens = torch.cat([module.class_token.expand(n, -1, -1), tokens], dim=1)
  embedding = position_embedding(module.encoder.pos_embedding, (height // p, width // p))
  encoded = torch.func.functional_call(module.encoder, {"pos_embedding": embedding}, (tokens,))
  return module.heads(encoded[:, 0])


def attention_heads(attention: torch.nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
  """``(N, heads, T, C / heads)``: each head's softmax(q k^T / sqrt(d)) v for
  ``attention(x, x, x)``, what its ``out_proj`` reads side by side."""
  n, length, width = x.shape
  heads = attention.num_heads
  qkv = F.linear(x, attention.in_proj_weight, attention.in_proj_bias)
  q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2)
             for t in qkv.chunk(3, dim=-1))
  weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(width // heads), dim=-1)
  return weights @ v


def hook(module: torch.nn.Module, name: str, grid: tuple[int, int],
         store: dict[str, Any]) -> torch.utils.hooks.RemovableHandle:
  """Records layer ``name`` of ``module`` into ``store`` during a pass over
  images whose patches form ``grid``: NCHW ``(N, C, rows, columns)`` for a
  token sequence, ``(N, C)`` for a ``.class_token``, other outputs as they are."""
  base = name.removesuffix(CLASS_TOKEN)

  def keep(value):
    if value.ndim == 3:
      value = (value[:, 0] if name.endswith(CLASS_TOKEN)
               else value[:, 1:].transpose(1, 2).reshape(value.shape[0], -1, *grid))
    store.setdefault(name, value)

  head = re.fullmatch(r"(.*\.self_attention)\.head_(\d+)", base)
  if head:
    def before(attention, args):
      keep(attention_heads(attention, args[0])[:, int(head[2])])
    return module.get_submodule(head[1]).register_forward_pre_hook(before)
  # torch's fused attention may skip out_proj's forward (its fast path):
  # out_proj's output is the attention's.
  base = base.removesuffix(".out_proj") if base.endswith(".self_attention.out_proj") else base
  return module.get_submodule(base).register_forward_hook(
      lambda layer, inputs, output: keep(output[0] if isinstance(output, tuple) else output))
