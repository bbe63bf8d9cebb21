"""The quality report: a run's record, tables and sheet, saved records old and
new, names checked before models load, and the script's one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classgen_jax import naturalness, quality
from classgen_jax.recipe import Octave, Recipe
from classgen_jax.starts import Uniform
from classgen_jax.updates import Sign
from tests.helpers import tiny

QUICK = Recipe("quick", Uniform(), 48, (Octave(3, update=Sign(), step_size=(0.02, 0.02)),))
RESULTS = Path(__file__).parent.parent / "docs" / "results"


def test_default_classes_are_32_spread_over_imagenet():
  classes = quality.DEFAULT_CLASSES
  assert len(set(classes)) == 32 and min(classes) >= 0 and max(classes) < 1000
  assert np.all(np.diff(classes) >= 31)


@pytest.mark.slow  # a quality run end to end (4-5 s); its table and records: below
def test_run_writes_record_table_and_sheet(tmp_path):
  clf = tiny()
  json_out, grid_out = tmp_path / "q.json", tmp_path / "q.png"
  report = quality.run(clf, [clf], [QUICK, "deepdraw"], [1, "tabby", 7],
                       json_out=json_out, grid_out=grid_out)
  assert "deepdraw" in report and "has no head aux2" in report
  assert report.splitlines()[-1] == f"wrote {grid_out}"
  (result,) = quality.load_records([json_out])
  assert result["generator"] == "resnet" and result["judges"] == ["resnet"]
  assert result["classes"] == [1, "tabby", 7] and result["dtype"] == "float32"
  score = result["recipes"]["quick"]
  assert set(score) == {"self_top1", "self_top1_as_optimised", "judges", "seconds",
                        "colourfulness", "spectral_slope"}
  assert score["judges"]["resnet"]["self_judging"]
  assert score["self_top1"] == score["judges"]["resnet"]["top1"]
  assert 0 <= score["self_top1_as_optimised"] <= 1
  # Three sign steps from uniform noise: colourful noise, flatter than the photos.
  assert score["colourfulness"] > 0
  assert score["spectral_slope"] < result["naturalness_reference"]["spectral_slope"]
  assert result["naturalness_reference"] == naturalness.reference()
  assert quality.markdown_table([result]) in report
  with Image.open(grid_out) as sheet:
    assert sheet.size == (3 * 160, 160 + 12 * 2 + 2)  # 3 images; target and one judge


def _record(recipe, dtype, top1, **extra):
  judges = {"lite1": {"top1": top1, "top5": 1.0, "mean_target_prob": 0.5,
                      "self_judging": False}}
  raw = {} if recipe == "sign" else {"self_top1_as_optimised": 0.5}
  return {"dtype": dtype, "judges": ["lite1"],
          "recipes": {recipe: {"self_top1": 1.0, "judges": judges, "seconds": 12.4, **raw,
                               **extra}}}


def test_markdown_table_of_several_runs():
  # Rows come in the catalogue's order, whatever the files' order.
  table = quality.markdown_table([_record("recognisable", "bfloat16", 0.9375),
                                  _record("sign", "float32", 0.0625)])
  lines = table.splitlines()
  assert len(lines) == 4 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
  assert lines[2] == "| `sign` |  | 100% | 6% / 100% (0.50) | 12 |"  # no raw rank recorded
  assert lines[3].startswith("| `recognisable` (bfloat16) | 50% | 100% | 94% / 100%")
  again = dict(_record("sign", "float32", 0.0), device="cpu", steps_scale=0.2)
  lines = quality.markdown_table([_record("sign", "float32", 0.0625), again]).splitlines()
  assert lines[2].startswith("| `sign` (?) |")
  assert lines[3].startswith("| `sign` (0.2x steps, cpu) |")


def test_markdown_table_naturalness_beside_the_photos():
  new = dict(_record("octaves", "float32", 1.0, colourfulness=41.26, spectral_slope=2.345),
             naturalness_reference={"colourfulness": 56.2, "spectral_slope": 3.19})
  lines = quality.markdown_table([_record("sign", "float32", 0.0), new]).splitlines()
  assert lines[0].endswith("| colourfulness | photos' colourfulness | spectral slope "
                           "| photos' spectral slope | seconds |")
  assert len({line.count("|") for line in lines}) == 1
  assert lines[2].endswith("| 0% / 100% (0.50) |  |  |  |  | 12 |")  # an older record
  assert lines[3].endswith("| 100% / 100% (0.50) | 41 | 56 | 2.35 | 3.19 | 12 |")


def test_saved_records_still_make_the_readme_table():
  paths = sorted(RESULTS.glob("quality_*.json"))
  assert len(paths) >= 2
  lines = quality.table_from_files(paths).splitlines()
  # Records with naturalness or recognisability add their columns; older ones
  # leave them blank.
  assert lines[0] == ("| recipe | self top-1 as optimised | self top-1 | efficientnet_lite1 "
                      "top-1 / top-5 (mean p) | efficientnet_lite2 top-1 / top-5 (mean p) "
                      "| glance top-5 | quarters top-5 | concentration "
                      "| colourfulness | photos' colourfulness | spectral slope "
                      "| photos' spectral slope | seconds |")
  assert ("| `sign` (cpu) | 100% | 0% | 0% / 0% (0.00) | 0% / 3% (0.00) |  |  |  |  |  |  |  "
          "| 847 |" in lines)
  assert any(line.startswith("| `octaves` | 100% | 100% | 78% / 97% (0.60) | 81% / 97% (0.63) "
                             "|  |  |  | 26 | 56 | 1.55 | 3.19 |") for line in lines)
  assert any(line.startswith("| `object` | 100% | 100% | 100% / 100% (0.90) "
                             "| 100% / 100% (0.87) | 97% | 36% | 0.62 | 60 |") for line in lines)


def test_load_records_errors(tmp_path):
  (tmp_path / "bad.json").write_text("{")
  (tmp_path / "adversarial.json").write_text(json.dumps({"model": "m", "random_sign": []}))
  with pytest.raises(ValueError, match="cannot read quality results .*bad.json"):
    quality.load_records([tmp_path / "bad.json"])
  with pytest.raises(ValueError, match="not a quality record"):
    quality.load_records([tmp_path / "adversarial.json"])
  with pytest.raises(ValueError, match="cannot read"):
    quality.load_records([tmp_path / "missing.json"])


def test_run_checks_every_name_before_loading_a_model(monkeypatch):
  def load(name):
    raise AssertionError(f"loaded {name} before checking the names")

  monkeypatch.setattr(quality, "load_classifier", load)
  lite = "efficientnet_lite0"
  for args, kwargs, message in [
      ((lite, [lite], ["sign"], []), {}, "class list is empty"),
      ((lite, [lite], ["sign"], ["chikadee"]), {}, "did you mean 'chickadee'"),
      ((lite, [], ["sign"], [1]), {}, "no judges"),
      ((lite, ["efficientnet_lite9"], ["sign"], [1]), {}, "unknown model 'efficientnet_lite9'"),
      ((lite, [lite], ["sgn"], [1]), {}, "unknown recipe 'sgn'"),
      ((lite, [lite], ["sign"], [1]), {"dtype": "float16"}, "unknown dtype 'float16'")]:
    with pytest.raises(ValueError, match=message):
      quality.run(*args, **kwargs)


def _script(*flags):
  return subprocess.run([sys.executable, "scripts/evaluate_quality.py", *flags],
                        capture_output=True, text=True, timeout=120)


def test_script_errors_are_one_line():
  # Every message is the library's (tested above); the script only must not add a traceback.
  result = _script("--classes=chikadee")
  assert result.returncode != 0
  assert "did you mean 'chickadee'" in result.stderr, result.stderr
  assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_script_prints_the_table_of_saved_records():
  result = _script(f"--from_json={RESULTS / 'quality_cpu_sign.json'}")
  assert result.returncode == 0, result.stderr
  assert "| `sign` | 100% | 0% | 0% / 0% (0.00) | 0% / 3% (0.00) | 847 |" in result.stdout
