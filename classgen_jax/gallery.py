"""Contact sheets, and the galleries of an atlas folder: a sheet and a static ``index.html``.

``sheet`` is the library's one labelled grid of thumbnails. ``make_gallery``
reads the folder's ``summary.jsonl`` (``classgen_jax.atlas``). The HTML
page uses relative links only, so it works opened straight from disk; a text
box filters the thumbnails by class name or index with a few lines of inline
JavaScript.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from classgen_jax import folders
from classgen_jax._files import atomic_path, write_text
from classgen_jax.images import to_uint8

SHEET = "contact_sheet.png"
INDEX = "index.html"
THUMBNAILS = "thumbnails"

Caption = Sequence[tuple[str, Any]]  # the lines under one thumbnail: (text, Pillow colour)
_LINE = 12  # pixels per caption line: Pillow's default font is 10 px tall


class GalleryError(ValueError):
  """A folder without images to show."""


def _rows(out: Path) -> list[dict[str, Any]]:
  rows = [r for r in folders.read_summary(out) if (out / str(r.get("file", ""))).is_file()]
  if not rows:
    raise GalleryError(f"{out} has no images listed in {folders.SUMMARY_JSONL}; run "
                       "scripts/generate.py --out there first")
  return sorted(rows, key=lambda r: (r["target"], str(r.get("init")), r["restart"]))


def sheet(images: Iterable[np.ndarray | Image.Image], captions: Sequence[Caption], *,
          thumbnail: int = 128, columns: int = 10, padding: int = 0) -> Image.Image:
  """A grid of thumbnails, each with its lines of caption below it.

  The one contact sheet of the library: an atlas folder's (``contact_sheet``)
  and the quality benchmark's (``quality.recipe_sheet``) are both this grid.

  Args:
    images: one per caption, PIL images or ``(H, W, 3)`` arrays in [0, 1];
      read one at a time, so a generator keeps a large folder out of memory.
    captions: per image, its lines as ``(text, colour)``; a line too wide for
      the thumbnail is cut short.
    thumbnail: side of each cell's image area, in pixels.
    columns: thumbnails per row (fewer where there are fewer images).
    padding: white margin around each thumbnail within its cell.

  Raises:
    ValueError: no captions, or not one image per caption.
  """
  if not captions:
    raise ValueError("a contact sheet needs at least one image")
  font = ImageFont.load_default()
  height = thumbnail + _LINE * max(len(lines) for lines in captions) + 2
  columns = max(1, min(columns, len(captions)))
  rows = -(-len(captions) // columns)
  grid = Image.new("RGB", (columns * thumbnail, rows * height), "white")
  draw = ImageDraw.Draw(grid)
  side = thumbnail - 2 * padding
  count = 0
  for k, (image, lines) in enumerate(zip(images, captions)):
    count += 1
    x, y = k % columns * thumbnail, k // columns * height
    if not isinstance(image, Image.Image):
      image = Image.fromarray(to_uint8(image))
    grid.paste(image.convert("RGB").resize((side, side), Image.BILINEAR),
               (x + padding, y + padding))
    for j, (text, colour) in enumerate(lines):
      while len(text) > 3 and draw.textlength(text, font=font) > thumbnail - 4:
        text = text[:-1]
      draw.text((x + 2, y + thumbnail + 1 + _LINE * j), text, fill=colour, font=font)
  if count != len(captions):
    raise ValueError(f"{count} images for {len(captions)} captions")
  return grid


def contact_sheet(out: str | os.PathLike, rows: list[dict[str, Any]] | None = None, *,
                  thumbnail: int = 128, columns: int = 10) -> Path:
  """An atlas folder's ``sheet``: each image captioned with its class and probability."""
  out = Path(out)
  rows = _rows(out) if rows is None else rows

  def images():
    for row in rows:
      with Image.open(out / row["file"]) as image:
        yield image.convert("RGB")

  captions = [[(_title(row), "black"), (f"{_score(row, 2)} r{row['restart']}", (90, 90, 90))]
              for row in rows]
  path = out / SHEET
  picture = sheet(images(), captions, thumbnail=thumbnail, columns=columns)
  with atomic_path(path, suffix=".png") as tmp:  # a full disk leaves no half sheet
    picture.save(tmp, format="PNG")
  return path


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 8px; }}
figure {{ margin: 0; width: {side}px; font-size: 12px; }}
figure img {{ width: {side}px; height: {side}px; }}
figure img {{ display: block; }}
figcaption span {{ color: #555; white-space: nowrap; }}
#filter {{ margin-bottom: 1em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<input id="filter" type="search" placeholder="filter by class name or index" size="40">
<div class="grid" id="grid">
{figures}
</div>
<script>
document.getElementById("filter").addEventListener("input", function () {{
  var q = this.value.toLowerCase();
  document.querySelectorAll("#grid figure").forEach(function (f) {{
    f.style.display = f.dataset.search.indexOf(q) >= 0 ? "" : "none";
  }});
}});
</script>
</body>
</html>
"""


def index_html(out: str | os.PathLike, rows: list[dict[str, Any]] | None = None, *,
               thumbnail: int = 128) -> Path:
  """``index.html``: linked thumbnails with class names and metrics, and a filter box."""
  out = Path(out)
  rows = _rows(out) if rows is None else rows
  (out / THUMBNAILS).mkdir(exist_ok=True)
  figures = []
  for row in rows:
    file = str(row["file"])
    with Image.open(out / file) as image, atomic_path(out / THUMBNAILS / file,
                                                      suffix=".png") as tmp:
      image.convert("RGB").resize((thumbnail, thumbnail), Image.BILINEAR).save(
          tmp, format="PNG")
    name = html.escape(str(row["name"]))
    search = html.escape(f"{row['target']} {row['name']}".lower(), quote=True)
    # One short line each, so that no value is split from its name.
    if "activation" in row:  # a unit's
      lines = [f"{_score(row, 2)}, rank {row['rank']} of the layer",
               f"sees {row['top_class_name']} ({row['top_probability']:.2f})"]
    else:
      lines = [f"{_score(row, 3)}, rank {row['rank']}",
               f"logit {row['target_logit']:.1f}, top-1 {row['top1_fraction']:.0%}"]
    lines.append(f"restart {row['restart']}"
                 + (f" from {row['init']}" if row.get("init") else ""))
    metrics = "<br>".join(f"<span>{html.escape(line)}</span>" for line in lines)
    figures.append(
        f'<figure data-search="{search}"><a href="{quote(file)}">'
        f'<img src="{THUMBNAILS}/{quote(file)}" alt="{name}" loading="lazy"></a>'
        f"<figcaption>{html.escape(_title(row))}<br>{metrics}"
        f"</figcaption></figure>")
  page = _PAGE.format(title=html.escape(f"classgen_jax atlas: {out.resolve().name}"),
                      side=thumbnail, figures="\n".join(figures))
  path = out / INDEX
  write_text(path, page)
  return path


def _title(row: dict[str, Any]) -> str:
  """A class's index and name; a unit's name (which holds its index)."""
  return str(row["name"]) if "activation" in row else f"{row['target']} {row['name']}"


def _score(row: dict[str, Any], digits: int) -> str:
  if "activation" in row:
    return f"act={row['activation']:.{digits}g}"
  return f"p={row['probability']:.{digits}f}"


def make_galleries(out: str | os.PathLike, *, thumbnail: int = 128,
                   columns: int = 10) -> list[Path]:
  """``make_gallery`` for an atlas folder, or for each atlas in its
  subfolders (a unit atlas's layers) and an ``index.html`` linking them.

  Returns:
    The pages written, the linking index last.

  Raises:
    GalleryError: neither the folder nor a subfolder has summarised images.
  """
  out = Path(out)
  if not out.is_dir():
    raise GalleryError(f"{out} is not a folder")
  if (out / folders.SUMMARY_JSONL).exists():
    return [make_gallery(out, thumbnail=thumbnail, columns=columns)[1]]
  atlases = sorted(p for p in out.iterdir() if (p / folders.SUMMARY_JSONL).exists())
  if not atlases:
    _rows(out)  # its error
  pages = [make_gallery(folder, thumbnail=thumbnail, columns=columns)[1] for folder in atlases]
  items = "\n".join(
      f'<li><a href="{quote(page.parent.name)}/{INDEX}">{html.escape(page.parent.name)}</a> '
      f"({len(_rows(page.parent))} images)<br><img src=\"{quote(page.parent.name)}/{SHEET}\" "
      f'alt="{html.escape(page.parent.name)}" style="max-width: 100%"></li>' for page in pages)
  title = html.escape(f"classgen_jax atlases: {out.resolve().name}")
  path = out / INDEX
  write_text(path, f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
                   f"<title>{title}</title></head>\n<body style=\"font-family: sans-serif\">"
                   f"\n<h1>{title}</h1>\n<ul>\n{items}\n</ul>\n</body>\n</html>\n")
  return [*pages, path]


def make_gallery(out: str | os.PathLike, *, thumbnail: int = 128,
                 columns: int = 10) -> tuple[Path, Path]:
  """The contact sheet and ``index.html`` of an atlas folder.

  Raises:
    GalleryError: the folder has no summarised images.
  """
  out = Path(out)
  if not out.is_dir():
    raise GalleryError(f"{out} is not a folder")
  rows = _rows(out)
  return (contact_sheet(out, rows, thumbnail=thumbnail, columns=columns),
          index_html(out, rows, thumbnail=thumbnail))
