"""Torch twins of ``classgen_jax.parameterisations``, found by type.

``render(image, params)`` and ``encode(image, x)`` work on batches: the
parameters as the library lays them out per image with a leading batch
axis (``Pixels``' too: NHWC), the images NCHW. The reference loop keeps a
pixel recipe's canvas NCHW and calls neither. The photo spectrum of ``Maco`` is data, not
computation: the twin reads the library's (``photo_amplitude``).
"""

from __future__ import annotations

import numpy as np
import torch

from classgen_jax import parameterisations as P
from converters.reference._registry import Twins

RENDER = Twins("parameterisation")
ENCODE = Twins("parameterisation")


def render(image: P.Parameterisation, params: torch.Tensor) -> torch.Tensor:
  """The NCHW images of a batch of parameters."""
  return RENDER(image, params)


def encode(image: P.Parameterisation, x: torch.Tensor) -> torch.Tensor:
  """Parameters whose render is the NCHW batch ``x``."""
  return ENCODE(image, x)


def _nhwc(x):
  return x.permute(0, 2, 3, 1)


def _nchw(x):
  return x.permute(0, 3, 1, 2)


@RENDER.register(P.Pixels)
def _pixels_render(image, params):
  return _nchw(params)


@ENCODE.register(P.Pixels)
def _pixels_encode(image, x):
  return _nhwc(x)


def _fourier_scale(image, side, like):
  return torch.as_tensor(P.fourier_scale(side, image.decay), dtype=like.dtype)[:, :, None]


@RENDER.register(P.Fourier)
def _fourier_render(image, params):
  side = params.shape[1]
  spectrum = torch.complex(params[..., 0], params[..., 1]) * _fourier_scale(image, side, params)
  return _nchw(torch.fft.irfft2(spectrum, s=(side, side), dim=(1, 2)))


@ENCODE.register(P.Fourier)
def _fourier_encode(image, x):
  side = x.shape[-1]
  spectrum = torch.fft.rfft2(_nhwc(x), dim=(1, 2)) / _fourier_scale(image, side, x)
  return torch.stack([spectrum.real, spectrum.imag], dim=-1)


def _colour(x, matrix):
  return torch.einsum("nchw,dc->ndhw", x, torch.as_tensor(matrix, dtype=x.dtype))


@RENDER.register(P.Decorrelated)
def _decorrelated_render(image, params):
  return _colour(render(image.inner, params), image.matrix)


@ENCODE.register(P.Decorrelated)
def _decorrelated_encode(image, x):
  return encode(image.inner, _colour(x, np.linalg.inv(image.matrix)))


@RENDER.register(P.Sigmoid)
def _sigmoid_render(image, params):
  return torch.sigmoid(render(image.inner, params))


@ENCODE.register(P.Sigmoid)
def _sigmoid_encode(image, x):
  return encode(image.inner, torch.logit(x.clamp(1e-6, 1 - 1e-6)))


@RENDER.register(P.Maco)
def _maco_render(image, params):
  side = params.shape[1]
  amplitude = (P.photo_amplitude(side) if image.alpha is None
               else P.power_law_amplitude(side, image.alpha))
  magnitude = torch.as_tensor(np.asarray(amplitude), dtype=params.dtype)
  spectrum = torch.complex(magnitude * torch.cos(params), magnitude * torch.sin(params))
  x = torch.fft.irfft2(spectrum, s=(side, side), dim=(1, 2))
  x = x - x.mean(dim=(1, 2, 3), keepdim=True)
  x = x / (x.flatten(1).std(dim=1, unbiased=False)[:, None, None, None] + 1e-4)
  return _nchw(x)


@ENCODE.register(P.Maco)
def _maco_encode(image, x):
  phase = torch.angle(torch.fft.rfft2(_nhwc(x), dim=(1, 2)))
  phase[:, 0, 0] = 0.0
  return phase

