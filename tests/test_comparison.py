"""Recipes side by side: the atlases, the measures kept per folder, the full-size
and blind sheets, and the agreement of the measures with eye labels."""

from __future__ import annotations

import dataclasses
import json

import pytest
from PIL import Image

from classgen_jax import comparison, eye, recognisability
from tests.shared import QUICK, red_judge, tiny

pytestmark = pytest.mark.xdist_group("comparison")
# Another name, the same octaves: the same compiled program.
OTHER = dataclasses.replace(QUICK, name="quick_other")


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
  out = tmp_path_factory.mktemp("compare")
  said = []
  summaries = comparison.compare(tiny(), {"red": red_judge()}, [QUICK, OTHER], [0, 1, 2], out,
                                 per_sheet=2, batch_size=2, log=said.append)
  return out, summaries, said


def test_every_recipe_gets_an_atlas_measures_and_a_row(compared):
  out, summaries, said = compared
  assert list(summaries) == ["quick", "quick_other"] and len(said) == 2
  assert set(summaries["quick"]) == {*recognisability.MEASURES, "colourfulness",
                                     "spectral_slope"}
  measured = json.loads((out / "quick" / comparison.MEASURES_FILE).read_text())
  assert measured["judges"] == ["red"] and len(measured["images"]) == 3
  entry = next(iter(measured["images"].values()))
  assert set(entry) == {"target", "restart", "red", "worst", "colourfulness", "spectral_slope"}
  # Two sheets of two classes (the second holds one), a row per recipe, full size.
  with Image.open(out / "compare_0.png") as sheet:
    assert sheet.size[0] == 2 * (QUICK.size + 4) and sheet.size[1] > 2 * QUICK.size
  with Image.open(out / "blind_1.png") as blind:
    assert blind.size == (QUICK.size + 4, 2 * (QUICK.size + 4 + 2))
  key = json.loads((out / "blind_key.json").read_text())
  assert len(key) == 6 and {k["recipe"] for k in key} == {"quick", "quick_other"}
  assert sorted(k["position"] for k in key if k["sheet"] == "blind_0.png") == [0, 1, 2, 3]
  table = comparison.summary_table(summaries)
  assert table.splitlines()[2].startswith("| `quick` |")


def test_measures_are_kept_and_agreement_reads_the_labels(compared, tmp_path):
  out, _, _ = compared
  kept = comparison.measure_folder(out / "quick", {"red": red_judge()})
  assert len(kept) == 3  # read back, not measured again
  labels = [eye.Label("quick", 0, "yes", generator="resnet"),
            eye.Label("quick", 1, "no", generator="resnet"),
            eye.Label("quick_other", 2, "maybe", generator="resnet"),
            eye.Label("quick", 999, "no", generator="resnet")]  # no such image
  eye.dump(labels, tmp_path / "labels.json")
  report = comparison.agreement_report(tmp_path / "labels.json",
                                       [out / "quick", out / "quick_other"],
                                       {"red": red_judge()}, json_out=tmp_path / "a.json")
  assert report.startswith("3 of 4 labelled images found")
  assert "| concentration |" in report and "| red:full_top1 |" in report
  record = json.loads((tmp_path / "a.json").read_text())
  assert record["found"] == 3 and record["named"]["quick"] == {"yes": 1, "maybe": 0, "no": 1}
  with pytest.raises(ValueError, match="none of the 1 labels' images is in the folders"):
    eye.dump(labels[3:], tmp_path / "none.json")
    comparison.agreement_report(tmp_path / "none.json", [out / "quick"], {"red": red_judge()})
  with pytest.raises(ValueError, match="is not an atlas folder"):
    comparison.folder_identity(tmp_path)
