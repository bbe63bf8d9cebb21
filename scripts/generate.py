r"""Generate images that a classifier sees as chosen classes: an atlas.

  python scripts/generate.py --classes=0-99 --restarts=2 --out=atlas
  python scripts/generate.py --classes=tabby,19 --init_image=photos/ --out=transfigured

Writes one PNG per image, summary.jsonl, summary.csv and run.json into the
--out folder; rerunning the same command resumes (classgen_jax.atlas).

Several processes, one job, each computing on its own devices: on one shared
--out they hand the classes out as they go, and a process that dies leaves
its classes to the others; on separate folders each makes every N-th class
(its own summary part, merged at the end), and if one dies the others end
with one line naming it and the classes it did not make:

  python scripts/generate.py --classes=all --out=atlas \
      --coordinator=10.0.0.1:1234 --num_processes=2 --process_id=0   # host 0
  python scripts/generate.py --classes=all --out=atlas \
      --coordinator=10.0.0.1:1234 --num_processes=2 --process_id=1   # host 1
  python scripts/generate.py --out=atlas --merge_summaries           # again, by hand

--distributed instead takes all three from the cluster (SLURM, TPU pods).
Two runs started on one folder without either simply share the work.

What a layer's units see instead of classes (one atlas per layer, in
<out>/<layer>; classgen_jax.units):

  python scripts/generate.py --layer=_blocks.8 --channels=0-31 --out=units
  python scripts/generate.py --layer=_blocks.8 --neurons=all --position=3,3 --out=units
  python scripts/generate.py --layer=_blocks.8 --directions=nmf.npy --out=units
  python scripts/generate.py --model=googlenet --layer=list      # every layer, with its shape
"""

from __future__ import annotations

from scripts import _startup  # noqa: F401  (first: a Ctrl-C while importing is one line)

# isort: split
import contextlib
import sys

from absl import app, flags, logging

from classgen_jax import (
  atlas,
  atlas_flags,
  classify,
  folders,
  job,
  progress,
  recipes,
  units,
  writing,
)
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", classify.DEFAULT_MODEL, _cli.MODEL_HELP)
flags.DEFINE_string("weights", None, "A .pth state dict (default: the model's own weights).")
flags.DEFINE_string("recipe", None, f"{_cli.RECIPE_HELP} Default: {recipes.DEFAULT} "
                    f"({recipes.DEFAULT_WITHOUT_BATCHNORM} for a model without BatchNorm, "
                    f"vit_b_16; {units.DEFAULT_RECIPE} with --layer).")
flags.DEFINE_string("classes", str(_cli.DEFAULT_CLASS), _cli.CLASSES_HELP)
flags.DEFINE_integer("restarts", 1, "Images per class, each from its own random start.")
flags.DEFINE_integer("batch_size", None, "Images optimised together (does not change them); "
                     "default: what fits the free device memory (8 per device on a CPU).")
flags.DEFINE_integer("seed", 0, "The run's seed.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "Model compute dtype (bfloat16: mixed precision, the image stays float32).")
flags.DEFINE_string("init_image", None,
                    "A photo, or a folder of photos, to transfigure into every class.")
flags.DEFINE_string("head", None, "Move the recipe's objectives to this head (e.g. aux1).")
flags.DEFINE_float("steps_scale", 1.0, "Scale every octave's iterations by this.")
flags.DEFINE_integer("snapshot_every", 0, "Also write a GIF per image, a frame every N steps.")
flags.DEFINE_string("out", "atlas", "Output folder.")
flags.DEFINE_bool("overwrite", False, "Replace another run's images in --out.")
flags.DEFINE_bool("distributed", False, "Part of a job of several processes, read from the "
                  "cluster as jax.distributed does (SLURM, Open MPI, TPU pods).")
flags.DEFINE_string("coordinator", None, "host:port of process 0, where the processes of a job "
                    "meet (with --num_processes and --process_id).")
flags.DEFINE_integer("num_processes", None, "Processes in the job (with --coordinator).")
flags.DEFINE_integer("process_id", None, "This process's index in the job (with --coordinator).")
flags.DEFINE_integer("startup_timeout", 300, "Seconds the processes of a job wait for each "
                     "other to start (--coordinator, --distributed).")
flags.DEFINE_bool("merge_summaries", False, "Only merge the processes' summary parts in --out "
                  "into summary.jsonl and summary.csv, then stop.")
flags.DEFINE_string("profile", None, "Write a jax.profiler trace of the run to this folder "
                    "(TensorBoard or Perfetto read it) and print where the wall time went.")
flags.DEFINE_string("layer", None, "Make an image per unit of this layer (several: "
                    "comma-separated, each in <out>/<layer>) instead of classes: its "
                    "--channels, --neurons or --directions; --layer=list prints --model's "
                    f"layers with their shapes. Main layers: {units.main_layers_help()}.")
flags.DEFINE_string("channels", None, "Channels of --layer: indices, ranges (0-63) or all.")
flags.DEFINE_string("neurons", None, "Neurons of --layer: channels (indices, ranges or all) "
                    "at --position.")
flags.DEFINE_string("position", None, "y,x of --neurons in the layer's map, as the recipe's "
                    "views show it (one outside is refused, naming the map's size; default: "
                    "the centre).")
flags.DEFINE_string("directions", None, "A file of directions in --layer's channel space, one "
                    "a row (.npy, .json, or text): an image per direction.")
flags.DEFINE_float("cosine_power", 0.0, "--directions: weight each position's dot product by "
                   "max(cos, 0.1)^p (Lucid's cossim_pow).")
flags.DEFINE_bool("progress", True, "Report compiling and iterations as they happen (a bar on "
                  "a terminal, plain lines in a log); --noprogress: one line per batch.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  _cli.check_out_folder(FLAGS.out)
  if FLAGS.merge_summaries:
    rows = folders.merge_summaries(FLAGS.out)
    logging.info("merged %d rows into %s", len(rows), FLAGS.out)
    return
  if FLAGS.layer == "list":
    _list_layers()
    return
  make = _units_job() if FLAGS.layer else _classes_job()
  reporter = progress.Reporter() if FLAGS.progress else None
  with _cli.interruptible(FLAGS.out, writing.WRITING) as handled:
    try:
      team = _start_job()
      share = {} if team is None else dict(
          process_index=team.group, process_count=len(team.groups),
          made=None if FLAGS.layer else team.made)
      with reporter or contextlib.nullcontext(), _profiling(FLAGS.profile):
        results = make(
            model=FLAGS.model, weights=FLAGS.weights, out=FLAGS.out, seed=FLAGS.seed,
            restarts=FLAGS.restarts, batch_size=FLAGS.batch_size,
            steps_scale=FLAGS.steps_scale, dtype=FLAGS.dtype,
            snapshot_every=FLAGS.snapshot_every, overwrite=FLAGS.overwrite,
            progress=reporter, **share)
      # A unit atlas's classes are each layer's units: its line names no classes.
      unmade = team and team.finish(
          None if FLAGS.layer else folders.parse_classes(FLAGS.classes), logging.info)
    except atlas.Interrupted as interrupted:
      handled.set()
      _cli.stop(f"{interrupted}; resume with: {_cli.resume_command()}")
    except KeyboardInterrupt:
      handled.set()
      _cli.stop(f"interrupted: {_cli.completed_rows(FLAGS.out)} images complete in "
                f"{FLAGS.out}, no partial files; resume with: {_cli.resume_command()}")
    except (ValueError, RuntimeError) as error:  # the library's errors are one line each
      sys.exit(f"error: {error}")
  for result in results:
    logging.info("made %d images, kept %d, in %s (%.0f s)", result.made, result.kept,
                 result.out, result.seconds)
    if FLAGS.profile:
      print(f"profile: {atlas.describe_timings(result.timings)}; trace in {FLAGS.profile}")
  if unmade:
    sys.exit(f"error: {unmade}; resume: start every process of the job again (this one: "
             f"{_cli.resume_command()})")


def _classes_job():
  """``atlas_flags.run`` with the class flags, as a list of one result."""
  def make(**kwargs):
    return [atlas_flags.run(classes=FLAGS.classes, recipe=FLAGS.recipe, init=FLAGS.init_image,
                      head=FLAGS.head, **kwargs)]
  return make


def _units_job():
  """``units.run`` with the unit flags; bad combinations end here, in one line."""
  given = {kind: getattr(FLAGS, kind) for kind in units.KINDS if getattr(FLAGS, kind)}
  if len(given) != 1:
    sys.exit("error: --layer takes one of --channels, --neurons or --directions"
             + (f" (got {', '.join('--' + k for k in given)})" if given else ""))
  for flag in ("init_image", "head"):
    if getattr(FLAGS, flag):
      sys.exit(f"error: --{flag} is for classes; a layer's units take none")
  if FLAGS["classes"].present:
    sys.exit("error: --classes and --layer: give one (a layer's units come from --channels, "
             "--neurons or --directions)")
  ((kind, spec),) = given.items()
  position = None
  if FLAGS.position:
    try:
      y, x = (int(v) for v in FLAGS.position.split(","))
    except ValueError:
      sys.exit(f"error: --position={FLAGS.position!r}: give y,x, e.g. --position=3,3")
    position = (y, x)
  recipe = FLAGS.recipe or units.DEFAULT_RECIPE

  def make(**kwargs):
    return units.run(layers=FLAGS.layer, kind=kind,
                     spec="all" if kind == "directions" else spec,
                     directions=spec if kind == "directions" else None,
                     position=position, cosine_power=FLAGS.cosine_power, recipe=recipe,
                     **kwargs)
  return make


def _list_layers() -> None:
  """Prints --model's layers with their output shapes (at its native size)."""
  try:
    classifier, _ = atlas_flags.load(FLAGS.model, FLAGS.weights)
  except (ValueError, RuntimeError) as error:
    sys.exit(f"error: {error}")
  print(units.layer_table(classifier))


def _profiling(folder: str | None):
  if not folder:
    return contextlib.nullcontext()
  import jax  # pylint: disable=g-import-not-at-top
  return jax.profiler.trace(folder)


def _start_job() -> job.Job | None:
  """The job this process is part of (``--coordinator``..., ``--distributed``), or None."""
  given = [FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id]
  if any(v is not None for v in given) and not all(v is not None for v in given):
    sys.exit("error: --coordinator, --num_processes and --process_id go together "
             "(or use --distributed to read them from the cluster)")
  if not (FLAGS.distributed or FLAGS.coordinator):
    return None
  if FLAGS.overwrite:
    sys.exit("error: --overwrite with several processes would delete each other's images: "
             "empty the folder first, then start the processes")
  team = job.start(FLAGS.out, coordinator=FLAGS.coordinator, num_processes=FLAGS.num_processes,
                   process_id=FLAGS.process_id, timeout=FLAGS.startup_timeout)
  logging.info(team.describe())
  return team


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
