"""The notebooks run: each one's code cells, in order, in one fresh Python
process (as a kernel would run them; without IPython, ``display`` shows
nothing), so that a change of the library's API cannot leave them behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
FIRST_WALK = _ROOT / "notebooks" / "first_walk.ipynb"


def _code(notebook: Path) -> str:
  cells = json.loads(notebook.read_text())["cells"]
  code = [cell for cell in cells if cell["cell_type"] == "code"]
  # Saved without outputs: no images in git, nothing stale to read.
  assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), notebook
  return "\n\n".join("".join(cell["source"]) for cell in code)


@pytest.mark.slow  # the article's recipes and two more on EfficientNet-Lite0: minutes
def test_first_walk_runs_from_noise_to_a_layers_channels(tmp_path):
  result = subprocess.run([sys.executable, "-c", _code(FIRST_WALK)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "PYTHONPATH": str(_ROOT)})
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ("gradient", "sign", "logit_l1", "smooth", "octaves", "Lucid"):
    assert name in result.stdout, result.stdout
  assert result.stdout.count("probability of the target:") == 6
  assert "channels 0-7 of _blocks.8" in result.stdout
  assert result.stdout.count("of the layer's; the model sees") == 8
  assert "Traceback" not in result.stderr
