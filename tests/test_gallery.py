"""Galleries: the contact sheet's layout and an index.html that parses, links
every image and escapes names."""

from __future__ import annotations

import html.parser
import json
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from classgen_jax import atlas, classify, folders, gallery
from tests.helpers import QUICK, tiny

# Its tests share the module's fixtures: one worker runs them all.
pytestmark = pytest.mark.xdist_group("gallery")


class _Links(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.hrefs, self.images, self.text, self.inputs = [], [], [], 0

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "a":
      self.hrefs.append(unquote(attrs["href"]))
    elif tag == "img":
      self.images.append(unquote(attrs["src"]))
    elif tag == "input":
      self.inputs += 1

  def handle_data(self, data):
    self.text.append(data)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  out = tmp_path_factory.mktemp("atlas")
  atlas.make_atlas(tiny(), [0, 1, 2], out, QUICK, restarts=2, batch_size=2)
  return out


def test_sheet_layout_padding_and_captions():
  red = np.zeros((10, 20, 3), np.float32)
  red[..., 0] = 1.0
  captions = [[("a", "black"), ("W" * 200, (170, 0, 0))], [("b", "black")], [("c", "black")]]
  grid = gallery.sheet([red, Image.new("RGB", (5, 5), "blue"), red], captions,
                       thumbnail=40, columns=2, padding=3)
  cell = 40 + 12 * 2 + 2  # the longest caption sets every row's height
  assert grid.size == (2 * 40, 2 * cell)
  pixels = np.asarray(grid)
  assert tuple(pixels[1, 1]) == (255, 255, 255)  # the padding
  assert tuple(pixels[3, 3]) == (255, 0, 0) and tuple(pixels[20, 60]) == (0, 0, 255)
  assert tuple(pixels[cell + 20, 20]) == (255, 0, 0) and tuple(pixels[cell + 20, 60]) == (255,) * 3
  # The over-long line is cut to its thumbnail's width: none of it in the next column.
  line = pixels[40 + 12:40 + 26]
  assert np.any(line[:, :38] != 255) and np.all(line[:, 38:] == 255)


def test_sheet_needs_one_image_per_caption():
  with pytest.raises(ValueError, match="2 images for 3 captions"):
    gallery.sheet([np.zeros((4, 4, 3))] * 2, [[("x", "black")]] * 3)
  with pytest.raises(ValueError, match="at least one"):
    gallery.sheet([], [])


def test_gallery_sheet_and_index_link_every_image(folder):
  sheet, index = gallery.make_gallery(folder, thumbnail=32, columns=4)
  with Image.open(sheet) as image:
    assert image.size == (4 * 32, 2 * (32 + 26))
  parser = _Links()
  parser.feed(index.read_text(encoding="utf-8"))
  parser.close()
  files = sorted(r["file"] for r in folders.read_summary(folder))
  assert len(files) == 6 and sorted(parser.hrefs) == files
  assert sorted(parser.images) == [f"{gallery.THUMBNAILS}/{f}" for f in files]
  for link in parser.hrefs + parser.images:
    assert not link.startswith(("/", "file:")) and (folder / link).is_file()
  assert parser.inputs == 1 and "goldfish" in "".join(parser.text)


def test_gallery_escapes_names(folder, tmp_path):
  out = tmp_path / "copy"
  out.mkdir()
  row = folders.read_summary(folder)[0]
  row = dict(row, name='<script>alert("x")</script> & co')
  (out / row["file"]).write_bytes((folder / row["file"]).read_bytes())
  folders.write_summary(out, [row])
  page = gallery.index_html(out).read_text(encoding="utf-8")
  assert "<script>alert" not in page and "&lt;script&gt;alert" in page
  parser = _Links()
  parser.feed(page)
  assert '<script>alert("x")</script> & co' in "".join(parser.text)


def test_a_full_disk_leaves_no_half_written_sheet_or_page(folder, tmp_path, monkeypatch):
  out = tmp_path / "copy"
  out.mkdir()
  for row in folders.read_summary(folder):
    (out / row["file"]).write_bytes((folder / row["file"]).read_bytes())
  folders.write_summary(out, folders.read_summary(folder))
  before = {p.name for p in out.iterdir()}
  save = Image.Image.save

  def full(self, fp, *args, **kwargs):
    save(self, fp, *args, **kwargs)  # the bytes go out, then the disk is full
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(Image.Image, "save", full)
  with pytest.raises(OSError, match="No space left"):
    gallery.contact_sheet(out)
  with pytest.raises(OSError, match="No space left"):
    gallery.index_html(out)
  assert {p.name for p in out.iterdir()} <= before | {gallery.THUMBNAILS}
  assert not list((out / gallery.THUMBNAILS).iterdir())  # no thumbnail, no temporary file


def test_gallery_of_empty_folder_is_an_error(tmp_path):
  with pytest.raises(gallery.GalleryError, match="no images"):
    gallery.make_gallery(tmp_path)


def test_classify_folder_adds_a_field_and_resume_keeps_it(folder):
  rows = classify.annotate_folder(folder, tiny(), batch_size=4)
  field = f"classify_{tiny().name}"
  stored = folders.read_summary(folder)
  assert stored == json.loads(json.dumps(rows)) and len(stored) == 6
  for row in stored:
    result = row[field]
    assert 0 <= result["target_rank"] < 1000 and 0 <= result["top1"] < 1000
    assert result["top1_probability"] >= result["target_probability"]
    assert (result["target_rank"] == 0) == (result["top1"] == row["target"])
  atlas.make_atlas(tiny(), [0, 1, 2], folder, QUICK, restarts=2, batch_size=2)
  assert all(field in r for r in folders.read_summary(folder))


def test_a_unit_atlas_gets_a_page_per_layer_and_an_index_of_them(tmp_path):
  from classgen_jax import units
  for layer in ("layer1", "layer2"):
    units.make_units(tiny(), layer, "0-1", tmp_path, QUICK)
  pages = gallery.make_galleries(tmp_path, thumbnail=32)
  assert pages == [tmp_path / "layer1" / gallery.INDEX, tmp_path / "layer2" / gallery.INDEX,
                   tmp_path / gallery.INDEX]
  top = _Links()
  top.feed(pages[-1].read_text())
  assert top.hrefs == ["layer1/index.html", "layer2/index.html"]
  assert top.images == [f"layer{k}/{gallery.SHEET}" for k in (1, 2)]
  assert all((tmp_path / src).is_file() for src in top.images)
  layer = _Links()
  layer.feed(pages[0].read_text())
  text = " ".join(layer.text)
  assert "layer1 channel 0" in text and "layer1 channel 1" in text and "act=" in text
  assert "of the layer" in text and "sees " in text
  with pytest.raises(gallery.GalleryError, match="no images listed"):
    gallery.make_galleries(tmp_path / "layer1" / gallery.THUMBNAILS)
