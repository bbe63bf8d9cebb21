"""Eye labels: the file's checks, and agreement measures on known cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from classgen_jax import eye


def _write(path, labels):
  path.write_text(json.dumps({"rule": eye.RULE, "labels": labels}))
  return path


def test_the_repository_labels_load_and_count():
  labels = eye.load("docs/eye_labels.json")
  assert len(labels) >= 32 and all(label.verdict in eye.VERDICTS for label in labels)
  counts = eye.named(labels)
  assert counts["natural"]["yes"] >= 1 and sum(counts["maco"].values()) >= 16


def test_labels_round_trip_and_name_their_image(tmp_path):
  labels = [eye.Label("natural", 15, "yes", note="a robin"), eye.Label("maco", 46, "no", seed=3)]
  eye.dump(labels, tmp_path / "l.json")
  assert eye.load(tmp_path / "l.json") == labels
  assert labels[1].key == ("efficientnet_lite0", "maco", 46, 3, 0, 1.0)
  by_name = _write(tmp_path / "n.json", [{"recipe": "maco", "class": "robin", "verdict": "no"}])
  assert eye.load(by_name)[0].target == 15


@pytest.mark.parametrize("entry, message", [
    ({"recipe": "maco", "class": 15, "verdict": "perhaps"},
     r"label 0: verdict 'perhaps' is not one of yes, maybe, no$"),
    ({"recipe": "macro", "class": 15, "verdict": "yes"},
     r"label 0: recipe 'macro' is not one of maco, natural$"),
    ({"recipe": "maco", "class": "robbin", "verdict": "yes"}, r"label 0: class: .*did you mean"),
    ({"recipe": "maco", "class": 15, "name": "eel", "verdict": "yes"},
     r"name 'eel' is not class 15's \('robin'\)"),
    ({"recipe": "maco", "class": 15, "verdict": "yes", "colour": "red"},
     r"unknown field 'colour'; fields: class, generator"),
])
def test_a_bad_label_is_one_line_naming_the_field_and_the_choices(tmp_path, entry, message):
  path = _write(tmp_path / "bad.json", [entry])
  with pytest.raises(eye.LabelError, match=message):
    eye.load(path, recipes=["maco", "natural"])
  (tmp_path / "broken.json").write_text("{")
  with pytest.raises(eye.LabelError, match="cannot read eye labels"):
    eye.load(tmp_path / "broken.json")


def test_agreement_of_a_perfect_a_reversed_and_a_useless_measure():
  labels = [eye.Label(r, t, v) for r, (t, v) in zip(
      ["a"] * 4 + ["b"] * 4 + ["c"] * 4,
      [(1, "yes"), (2, "yes"), (3, "maybe"), (4, "no"), (5, "yes"), (6, "no"), (7, "no"),
       (8, "maybe"), (9, "no"), (10, "no"), (11, "no"), (12, "maybe")])]
  scores = np.asarray([label.score for label in labels])
  perfect = eye.agreement(scores * 10 + 1, labels)
  assert perfect["auc"] == 1.0 and perfect["spearman"] == pytest.approx(1.0)
  assert perfect["recipe_spearman"] == pytest.approx(1.0) and perfect["recipes"] == 3
  reversed_ = eye.agreement(scores, labels, direction=-1)
  assert reversed_["auc"] == 0.0 and reversed_["spearman"] == pytest.approx(-1.0)
  assert eye.agreement(np.ones(12), labels)["auc"] == 0.5  # all tied
  assert np.isnan(eye.spearman([1, 1, 1], [0, 1, 2]))
  assert eye.auc([2, 3], [1]) == 1.0 and eye.auc([1], [1, 2]) == 0.25
