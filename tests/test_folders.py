"""An atlas folder's format, without a model: class lists, names, the run's
identity, completeness, summaries, and the folder's refusals."""

from __future__ import annotations

import dataclasses
import errno
import json

import numpy as np
import pytest
from PIL import Image

from classgen_jax import folders, imagenet, recipes
from classgen_jax.images import save_png
from classgen_jax.operations import Clip, Flip


def test_parse_classes_mixes_names_indices_and_ranges():
  assert folders.parse_classes("0-2, tabby,19") == [0, 1, 2, 281, 19]
  assert folders.parse_classes("all") == list(range(1000))
  assert folders.parse_classes("black_and_gold_garden_spider") == [
      imagenet.class_index("black and gold garden spider")]


@pytest.mark.parametrize("spec, message", [
    ("5-3", "is empty"),
    ("0-5,3-7", "given twice"),
    ("tabby,281", "given twice"),
    ("1,,2", "empty class"),
    ("", "empty class"),
    ("990-1000", "out of range"),
    ("tabbby", "did you mean 'tabby'"),
])
def test_parse_classes_errors(spec, message):
  with pytest.raises(ValueError, match=message):
    folders.parse_classes(spec)


def test_image_name():
  assert folders.image_name(19, 0) == "0019_chickadee_r0.png"
  assert folders.image_name(281, 2, photo="my cat") == "0281_tabby_my_cat_r2.png"
  assert folders.IMAGE_NAME.match(folders.image_name(281, 2, photo="my cat"))


def _config(**changes):
  config = dict(model="m", weights="default", recipe=recipes.get("octaves"), seed=0,
                restarts=1, steps_scale=1.0, head=None)
  return folders.run_config(**{**config, **changes})


def test_the_run_id_names_every_value_of_the_recipe():
  base = _config()
  assert folders.config_id(base) == folders.config_id(_config())
  assert folders.config_id(_config(seed=1)) != folders.config_id(base)
  # Values with the same fields but another type (a flip, a clip: no fields)
  # are different recipes, and different runs.
  octave = recipes.get("jittered_adam").octaves[0]
  flipped = recipes.get("jittered_adam")
  clipped = dataclasses.replace(flipped, octaves=(
      dataclasses.replace(octave, view=(*octave.view[:-1], Clip())),
      *flipped.octaves[1:]))
  assert isinstance(octave.view[-1], Flip)
  assert folders.config_id(_config(recipe=flipped)) != folders.config_id(
      _config(recipe=clipped))
  assert _config(dtype="bfloat16")["dtype"] == "bfloat16" and "dtype" not in base


def _png(path, run_id, row):
  save_png(path, np.zeros((8, 8, 3), np.float32),
           {"run_id": run_id, "summary": json.dumps(row)})


def test_a_png_is_complete_when_it_decodes_and_names_the_run(tmp_path):
  path = tmp_path / "0001_goldfish_r0.png"
  _png(path, "abc", {"file": path.name})
  assert folders.read_complete(path, "abc") == {"file": path.name}
  assert folders.read_complete(path, "another run") is None
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  assert folders.read_complete(path, "abc") is None
  assert folders.read_complete(tmp_path / "missing.png", "abc") is None


def test_summaries_are_written_appended_read_and_merged(tmp_path):
  rows = [dict(target=t, name=imagenet.LABELS[t], restart=0, init=None, probability=0.5,
               rank=0, target_logit=1.0, top1_fraction=1.0, zscore_jitter=0.0,
               top1_fraction_per_octave=[1.0], zscore_jitter_per_octave=[0.0], seed=0,
               file=folders.image_name(t, 0)) for t in (3, 1, 2)]
  folders.write_summary(tmp_path, rows[:1], part=1)
  jsonl, csv_path = folders.summary_files(tmp_path, 1)
  folders.append_rows(jsonl, csv_path, rows[1:2])
  folders.write_summary(tmp_path, rows[2:], part=0)
  with open(jsonl, "a", encoding="utf-8") as f:
    f.write('{"cut short by a kill')
  assert folders.read_summary(tmp_path, 1) == rows[:2]
  merged = folders.merge_summaries(tmp_path)
  assert [r["target"] for r in merged] == [1, 2, 3]  # class order
  assert folders.read_summary(tmp_path) == merged
  lines = (tmp_path / folders.SUMMARY_CSV).read_text().splitlines()
  assert lines[0].split(",") == list(folders.SUMMARY_FIELDS) and len(lines) == 4


def _rows(*targets):
  return [dict(target=t, name=imagenet.LABELS[t], restart=0, init=None, probability=0.5,
               rank=0, target_logit=1.0, top1_fraction=1.0, zscore_jitter=0.0,
               top1_fraction_per_octave=[1.0], zscore_jitter_per_octave=[0.0], seed=0,
               file=folders.image_name(t, 0)) for t in targets]


def test_a_line_cut_by_a_kill_costs_no_later_row(tmp_path):
  jsonl, csv_path = folders.summary_files(tmp_path)
  folders.write_summary(tmp_path, _rows(1))
  with open(jsonl, "a", encoding="utf-8") as f:
    f.write('{"cut short by a kill')
  folders.append_rows(jsonl, csv_path, _rows(2))
  assert folders.read_summary(tmp_path) == _rows(1, 2)


def test_complete_summary_adds_missing_rows_and_drops_cut_and_repeated_lines(tmp_path):
  jsonl, csv_path = folders.summary_files(tmp_path)
  one, two, three = _rows(1, 2, 3)
  one["classify_lite1"] = {"top1": 1}  # a field another tool added is kept
  folders.write_summary(tmp_path, [one, two])
  before = jsonl.read_text()
  assert folders.complete_summary(tmp_path, {r["file"]: r for r in _rows(1, 2)}) == []
  assert jsonl.read_text() == before  # nothing wrong: not rewritten
  folders.append_rows(jsonl, csv_path, [two])
  with open(jsonl, "a", encoding="utf-8") as f:
    f.write('{"cut short')
  added = folders.complete_summary(tmp_path, {r["file"]: r for r in _rows(1, 2, 3)})
  assert added == [three["file"]]
  assert folders.read_summary(tmp_path) == [one, two, three]
  assert len(jsonl.read_text().splitlines()) == 3
  assert len(csv_path.read_text().splitlines()) == 4


def test_the_folder_refuses_other_runs_and_overwrite_clears_them(tmp_path):
  config = _config()
  folders.prepare_folder(tmp_path, config, overwrite=False)
  assert json.loads((tmp_path / folders.RUN_FILE).read_text())["seed"] == 0
  folders.prepare_folder(tmp_path, config, overwrite=False)  # the same run: resumes
  with pytest.raises(folders.AtlasError, match=r"seed differ\); use a new --out or --overwrite"):
    folders.prepare_folder(tmp_path, _config(seed=1), overwrite=False)
  image = tmp_path / folders.image_name(5, 0)
  image.write_bytes(b"x")
  folders.prepare_folder(tmp_path, _config(seed=1), overwrite=True)
  assert not image.exists()
  assert json.loads((tmp_path / folders.RUN_FILE).read_text())["seed"] == 1


def test_foreign_images_and_unwritable_folders_are_refused(tmp_path):
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  Image.new("RGB", (8, 8)).save(foreign / "0007_stingray_r0.png")
  with pytest.raises(folders.AtlasError, match="holds another run's images"):
    folders.prepare_folder(foreign, _config(), overwrite=False)
  (tmp_path / "file").write_text("x")
  with pytest.raises(folders.AtlasError, match="cannot write to --out"):
    folders.prepare_folder(tmp_path / "file" / "out", _config(), overwrite=False)


def test_photo_paths_skip_unreadable_files_with_a_warning(tmp_path, caplog):
  photos = tmp_path / "photos"
  photos.mkdir()
  Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(photos / "grey.png")
  (photos / "notes.txt").write_text("not an image")
  with caplog.at_level("WARNING"):
    assert [p.name for p in folders.photo_paths(photos)] == ["grey.png"]
  assert "notes.txt" in caplog.text
  assert folders.photo_paths(photos / "grey.png") == [photos / "grey.png"]
  unreadable = tmp_path / "unreadable"
  unreadable.mkdir()
  (unreadable / "bad.jpg").write_bytes(b"nope")
  with pytest.raises(folders.AtlasError, match="no readable image"):
    folders.photo_paths(unreadable)
  with pytest.raises(folders.AtlasError, match="does not exist"):
    folders.photo_paths(tmp_path / "nowhere")


def test_storage_errors_are_one_line_with_the_fix(tmp_path):
  error = folders.storage_error(tmp_path / "x.png", OSError(errno.ENOSPC, "No space"))
  assert isinstance(error, folders.StorageError) and "\n" not in str(error)
  assert "the disk is full; stopped cleanly" in str(error) and "rerun" in str(error)


def test_weights_are_named_by_checksum_or_source(tmp_path):
  file = tmp_path / "w.pth"
  file.write_bytes(b"weights")
  assert folders.weights_identity("resnet18", str(file)).startswith("sha256:")
  assert folders.weights_identity("resnet18", None) == "resnet18:default"
