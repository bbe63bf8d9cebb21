from __future__ import annotations

import pytest

from classgen_jax import imagenet


def test_labels():
  assert len(imagenet.LABELS) == 1000 and len(set(imagenet.LABELS)) == 1000
  assert imagenet.class_name(0) == "tench" and imagenet.class_name(19) == "chickadee"


@pytest.mark.parametrize("query,index", [
    ("tabby", 281), ("Tabby", 281), ("  TRAFFIC LIGHT ", 920), ("traffic_light", 920),
    (920, 920), ("920", 920), ("Siberian husky", 250),
])
def test_lookup(query, index):
  assert imagenet.class_index(query) == index


def test_unknown_name_suggests_close_matches():
  with pytest.raises(imagenet.UnknownClassError, match="did you mean 'chickadee'"):
    imagenet.class_index("chikadee")
  with pytest.raises(imagenet.UnknownClassError, match="0 to 999"):
    imagenet.class_index(1000)
  with pytest.raises(imagenet.UnknownClassError, match="unknown class"):
    imagenet.class_index("qqqqqqqqqqq")
