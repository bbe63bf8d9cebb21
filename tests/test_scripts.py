"""The scripts' shared behaviour (scripts/_cli.py): help text, quiet backends, --out checks."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from classgen_jax import models, recipes
from scripts import _cli

ROOT = Path(__file__).parents[1]
SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("*.py") if not p.name.startswith("_"))


def _script(name, *args, timeout=120):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
  return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args],
                        capture_output=True, text=True, env=env, timeout=timeout)


def test_generate_help_lists_models_recipes_and_the_default_class():
  result = _script("generate.py", "--help")  # absl exits 1 after --help
  assert "flags:" in result.stdout, result.stderr[-2000:]
  text = " ".join(result.stdout.split())  # absl wraps long help lines
  for name in [*models.MODELS, *recipes.names()]:
    assert name in text
  assert "19 is chickadee" in text and "``" not in text


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_rest_markup_and_no_bare_model_help(script):
  """The usage text absl prints is the docstring plus every flag's help string."""
  tree = ast.parse(script.read_text())
  texts = [ast.get_docstring(tree) or ""]
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr.startswith("DEFINE")):
      texts += [n.value for arg in node.args[2:3] for n in ast.walk(arg)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)]
      if isinstance(node.args[0], ast.Constant) and node.args[0].value == "model":
        assert ast.unparse(node.args[2]) == "_cli.MODEL_HELP"
  assert not [t for t in texts if "``" in t]


def test_out_naming_a_file_is_one_line(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("not a folder")
  result = _script("generate.py", f"--out={path}")
  assert result.returncode == 1
  assert result.stderr.strip() == (
      f"error: --out {path} is a file; give a folder (new or from an earlier run)")
  assert path.read_text() == "not a folder"


@pytest.fixture
def jax_logger():
  logger = logging.getLogger("jax._src.xla_bridge")
  saved = logging.getLogger("jax").level
  yield logger
  logging.getLogger("jax").setLevel(saved)


def test_backend_info_hidden_by_default_warnings_kept(jax_logger):
  _cli.quiet_backend_logs(0)
  assert not jax_logger.isEnabledFor(logging.INFO)
  assert jax_logger.isEnabledFor(logging.WARNING)
  _cli.quiet_backend_logs(1)
  assert jax_logger.getEffectiveLevel() == logging.getLogger().getEffectiveLevel()
