"""Galleries of an atlas folder: a contact sheet and a static ``index.html``.

Both read the folder's ``summary.jsonl`` (``classgen_jax.atlas``). The HTML
page uses relative links only, so it works opened straight from disk; a text
box filters the thumbnails by class name or index with a few lines of inline
JavaScript.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image, ImageDraw, ImageFont

from classgen_jax import atlas

SHEET = "contact_sheet.png"
INDEX = "index.html"
THUMBNAILS = "thumbnails"


class GalleryError(ValueError):
  """A folder without images to show."""


def _rows(out: Path) -> list[dict[str, Any]]:
  rows = [r for r in atlas.read_summary(out) if (out / str(r.get("file", ""))).is_file()]
  if not rows:
    raise GalleryError(f"{out} has no images listed in {atlas.SUMMARY_JSONL}; run "
                       "scripts/generate.py --out there first")
  return sorted(rows, key=lambda r: (r["target"], str(r.get("init")), r["restart"]))


def contact_sheet(out: str | os.PathLike, rows: list[dict[str, Any]] | None = None, *,
                  thumbnail: int = 128, columns: int = 10) -> Path:
  """A grid of thumbnails, each captioned with its class and target probability."""
  out = Path(out)
  rows = _rows(out) if rows is None else rows
  font = ImageFont.load_default()
  caption = 26
  columns = max(1, min(columns, len(rows)))
  lines = -(-len(rows) // columns)
  sheet = Image.new("RGB", (columns * thumbnail, lines * (thumbnail + caption)), "white")
  draw = ImageDraw.Draw(sheet)
  for k, row in enumerate(rows):
    x, y = k % columns * thumbnail, k // columns * (thumbnail + caption)
    with Image.open(out / row["file"]) as image:
      sheet.paste(image.convert("RGB").resize((thumbnail, thumbnail), Image.BILINEAR), (x, y))
    name = f"{row['target']} {row['name']}"
    while len(name) > 3 and draw.textlength(name, font=font) > thumbnail - 4:
      name = name[:-1]
    draw.text((x + 2, y + thumbnail + 1), name, fill="black", font=font)
    draw.text((x + 2, y + thumbnail + 13), f"p={row['probability']:.2f} r{row['restart']}",
              fill=(90, 90, 90), font=font)
  path = out / SHEET
  sheet.save(path)
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
figcaption span {{ color: #555; }}
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
    with Image.open(out / file) as image:
      image.convert("RGB").resize((thumbnail, thumbnail), Image.BILINEAR).save(
          out / THUMBNAILS / file)
    name = html.escape(str(row["name"]))
    search = html.escape(f"{row['target']} {row['name']}".lower(), quote=True)
    metrics = (f"p={row['probability']:.3f} rank {row['rank']} logit "
               f"{row['target_logit']:.1f} top-1 {row['top1_fraction']:.0%} restart "
               f"{row['restart']}")
    if row.get("init"):
      metrics += f" from {row['init']}"
    figures.append(
        f'<figure data-search="{search}"><a href="{quote(file)}">'
        f'<img src="{THUMBNAILS}/{quote(file)}" alt="{name}" loading="lazy"></a>'
        f"<figcaption>{row['target']} {name}<br><span>{html.escape(metrics)}</span>"
        f"</figcaption></figure>")
  page = _PAGE.format(title=html.escape(f"classgen_jax atlas: {out.resolve().name}"),
                      side=thumbnail, figures="\n".join(figures))
  path = out / INDEX
  path.write_text(page, encoding="utf-8")
  return path


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
