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


# generate.py on the tiny model, with a recipe long enough to interrupt.
_GENERATE_TINY = """
import sys
import classgen_jax.weights
from classgen_jax import objectives, recipes, updates
from classgen_jax.starts import Uniform
from tests.shared import tiny
classgen_jax.weights.load_classifier = lambda *args, **kwargs: tiny()
recipes.RECIPES["long"] = recipes.Recipe("long", Uniform(), 48, (recipes.Octave(
    4000, objectives.class_logit(), updates.Sign(), (0.01, 0.01)),))
from scripts import generate
sys.argv = ["scripts/generate.py", "--recipe=long", "--classes=1,2", "--batch_size=1",
            "--out=" + sys.argv[1]]
generate.run()
"""


@pytest.mark.slow
def test_ctrl_c_stops_within_seconds_with_the_resume_line(tmp_path):
  import signal
  import time
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  # As from a terminal: a job a shell started in the background (CI's, say)
  # inherits SIGINT ignored, and Python then installs no Ctrl-C handler.
  process = subprocess.Popen([sys.executable, "-c", _GENERATE_TINY, str(tmp_path / "out")],
                             stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  lines = []
  try:
    for line in process.stderr:  # a progress line within the octave, then Ctrl-C
      lines.append(line)
      if "iteration " in line:
        break
    start = time.monotonic()
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    code = process.wait(timeout=30)
    seconds = time.monotonic() - start
  finally:
    process.kill()
  assert "compiling" in "".join(lines) and "iteration " in lines[-1], "".join(lines)[-2000:]
  assert code == 130 and seconds < 3, (code, seconds, rest[-2000:])
  assert "Traceback" not in rest
  last = rest.strip().splitlines()[-1]
  assert last.startswith("interrupted: 0 of 2 images complete, no partial files; resume with:")
  assert last.endswith("--recipe=long --classes=1,2 --batch_size=1 --out=" + str(tmp_path / "out"))
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
      ".claims", "run.json", "summary.csv", "summary.jsonl"]
  assert [p.name for p in (tmp_path / "out" / ".claims").iterdir()] == ["lock"]  # released


def test_a_ctrl_c_in_a_gc_callback_is_raised_again_not_lost(monkeypatch):
  """A Ctrl-C that lands while Python runs a gc callback (JAX frees buffers
  in one) is not printed as "Exception ignored" and lost: it comes again,
  outside the callback."""
  import gc
  import signal
  import time

  from scripts import _cli
  printed, sent = [], []
  monkeypatch.setattr(sys, "unraisablehook", _cli.interrupt_again(printed.append))

  def callback(phase, info):
    if phase == "start" and not sent:
      sent.append(phase)
      signal.raise_signal(signal.SIGINT)  # handled here, inside the callback

  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  gc.callbacks.append(callback)
  try:
    with pytest.raises(KeyboardInterrupt):
      gc.collect()
      for _ in range(200):
        time.sleep(0.01)
  finally:
    gc.callbacks.remove(callback)
    signal.signal(signal.SIGINT, previous)
  assert sent and not printed


def test_compilation_cache_under_the_project_cache(tmp_path, monkeypatch):
  import jax
  previous = jax.config.jax_compilation_cache_dir
  monkeypatch.setenv("CLASSGEN_JAX_CACHE", str(tmp_path))
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  try:
    assert _cli.enable_compilation_cache() == str(tmp_path / "xla")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
    monkeypatch.setenv("CLASSGEN_JAX_XLA_CACHE", "0")
    jax.config.update("jax_compilation_cache_dir", previous)
    assert _cli.enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == previous
  finally:
    jax.config.update("jax_compilation_cache_dir", previous)


def test_ctrl_c_while_importing_is_one_line():
  """A Ctrl-C in generate.py's first second (still importing JAX): one line,
  status 130, no traceback."""
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "generate.py"), "--help"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  time.sleep(0.6)
  process.send_signal(signal.SIGINT)
  out, err = process.communicate(timeout=60)
  assert process.returncode == 130, (out[-500:], err[-2000:])
  assert err.strip() == "interrupted while starting, before anything was written"


def test_compile_cache_write_errors_are_one_line(caplog):
  """JAX warns once per program that it cannot write the cache (each with a
  long path); the scripts say it once, and pass every other warning on."""
  passed = []
  show = _cli.cache_warnings_in_one_line(
      "/full/xla", lambda message, *args, **kwargs: passed.append(str(message)))
  for program in ("jit_octave", "jit_forward", "jit_step"):
    show(UserWarning(f"Error writing persistent compilation cache entry for '{program}': "
                     "OSError: [Errno 28] No space left on device: '/full/xla/long-path'"),
         UserWarning, "compiler.py", 834)
  show(UserWarning("something else"), UserWarning, "x.py", 1)
  lines = [r.getMessage() for r in caplog.records if "compile cache" in r.getMessage()]
  assert lines == ["the compile cache in /full/xla is not being written (OSError: [Errno 28] "
                   "No space left on device); the run goes on, and its programs will be "
                   "compiled again next time"]
  assert passed == ["something else"]


_PROFILE_TINY = """
import sys
import classgen_jax.weights
from tests.shared import tiny
classgen_jax.weights.load_classifier = lambda *args, **kwargs: tiny()
from scripts import generate
sys.argv = ["scripts/generate.py", "--recipe=quick_for_profile", "--classes=1,2",
            "--batch_size=1", "--out=" + sys.argv[1], "--profile=" + sys.argv[2]]
from classgen_jax import recipes
from tests.shared import QUICK
recipes.RECIPES["quick_for_profile"] = QUICK
generate.run()
"""


@pytest.mark.slow  # a subprocess, ~20 s
def test_generate_profile_writes_a_trace_and_says_where_the_time_went(tmp_path):
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  done = subprocess.run([sys.executable, "-c", _PROFILE_TINY, str(tmp_path / "out"),
                         str(tmp_path / "trace")], capture_output=True, text=True, env=env,
                        cwd=ROOT, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  line = next(x for x in done.stdout.splitlines() if x.startswith("profile: "))
  for part in ("wall", "compiling", "generating", "writing PNGs", "trace in"):
    assert part in line, line
  assert list((tmp_path / "trace").rglob("*.xplane.pb"))
  assert len(list((tmp_path / "out").glob("*.png"))) == 2


@pytest.mark.parametrize("args,message", [
    (["--layer=_blocks.8"], "--layer takes one of --channels, --neurons or --directions"),
    (["--layer=_blocks.8", "--channels=0", "--neurons=0"], "(got --channels, --neurons)"),
    (["--layer=_blocks.8", "--channels=0", "--classes=tabby"], "--classes and --layer"),
    (["--layer=_blocks.8", "--neurons=0", "--position=3"], "--position='3': give y,x"),
    (["--layer=_blocks.8", "--channels=0", "--head=aux1"], "--head is for classes"),
])
def test_unit_flags_in_conflict_are_one_line(tmp_path, args, message):
  result = _script("generate.py", *args, f"--out={tmp_path}")
  assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
  assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_generate_lists_a_models_layers_and_its_help_the_main_ones(tmp_path):
  listed = _script("generate.py", "--layer=list", f"--out={tmp_path}")
  assert listed.returncode == 0, listed.stderr[-2000:]
  lines = listed.stdout.splitlines()
  assert lines[0].split()[0] == "_conv_stem"
  assert any(line.startswith("_blocks.8 ") for line in lines)
  helped = " ".join(_script("generate.py", "--help").stdout.split())
  assert "efficientnet_lite0: _conv_stem, _blocks.0-15, _conv_head" in helped
