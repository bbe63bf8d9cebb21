"""Reading and writing images: files <-> HWC float32 arrays in [0, 1].

Any size and mode that Pillow reads (RGB, RGBA, grayscale, palette, CMYK,
16-bit) comes back as RGB; transparency is composited over white.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from classgen_jax._files import atomic_path


class ImageError(ValueError):
  """A file that cannot be read as an image."""


def _to_rgb(image: Image.Image) -> Image.Image:
  if image.mode in ("RGBA", "LA", "PA") or (
      image.mode == "P" and "transparency" in image.info):
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
  if image.mode in ("I", "I;16", "I;16B", "I;16L"):
    array = np.asarray(image, dtype=np.float64)
    scale = 65535.0 if array.max() > 255 else 255.0
    gray = np.clip(array / scale * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
  return image.convert("RGB")


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = None,
               *, crop: bool = False) -> np.ndarray:
  """An image file as an ``(H, W, 3)`` float32 array in [0, 1].

  Args:
    path: any file Pillow can read.
    size: if given, resize to ``(size, size)`` (or ``(height, width)``) with
      bilinear filtering.
    crop: with ``size``, keep the aspect ratio: resize the shorter side to
      ``size / 0.875`` and take the centre crop, as ImageNet evaluation does.

  Raises:
    ImageError: the file is missing or not a readable image.
  """
  try:
    with Image.open(path) as opened:
      opened.load()
      image = _to_rgb(opened)
  except FileNotFoundError:
    raise ImageError(f"image file {path} does not exist") from None
  except (UnidentifiedImageError, OSError, ValueError) as error:
    raise ImageError(f"cannot read {path} as an image ({error})") from None
  if size is not None:
    height, width = (size, size) if isinstance(size, int) else size
    if crop:
      scale = max(height, width) / 0.875 / min(image.size)
      resized = (max(width, round(image.width * scale)),
                 max(height, round(image.height * scale)))
      image = image.resize(resized, Image.BILINEAR)
      left = (image.width - width) // 2
      top = (image.height - height) // 2
      image = image.crop((left, top, left + width, top + height))
    else:
      image = image.resize((width, height), Image.BILINEAR)
  return np.asarray(image, dtype=np.float32) / 255.0


def bundled_photos() -> dict[str, np.ndarray]:
  """The photos that ship in ``classgen_jax/assets``, by file stem, each ``(H, W, 3)``.

  >>> sorted(bundled_photos())
  ['chelsea', 'coffee']
  """
  assets = importlib.resources.files("classgen_jax") / "assets"
  return {path.name.rsplit(".", 1)[0]: load_image(path)
          for path in sorted(assets.iterdir(), key=lambda p: p.name)
          if path.name.lower().endswith((".jpg", ".jpeg", ".png"))}


def to_uint8(image: np.ndarray) -> np.ndarray:
  return (np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str | os.PathLike, image: np.ndarray,
             metadata: dict[str, str] | None = None) -> None:
  """Write an HWC image in [0, 1] as a PNG, atomically, with text metadata."""
  path = Path(path)
  info = PngImagePlugin.PngInfo()
  for key, value in (metadata or {}).items():
    info.add_itxt(key, str(value))
  with atomic_path(path) as tmp:
    Image.fromarray(to_uint8(image)).save(tmp, format="PNG", pnginfo=info)


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
  with Image.open(path) as image:
    return dict(getattr(image, "text", {}))
