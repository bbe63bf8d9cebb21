r"""Throughput of classgen_jax's compiled octave against the torch reference.

  python scripts/benchmark.py --model=googlenet --image_size=224 --batch_size=8
  python scripts/benchmark.py --model=googlenet --dtype=bfloat16 --json_out=bf16.json
  python scripts/benchmark.py --model=resnet18 --sweep --max_batch=32
  python scripts/benchmark.py --flops=googlenet,inception_v3,resnet50,efficientnet_lite0
  python scripts/benchmark.py --model=googlenet --recipe=octaves --atlas=1000 --batch_size=250
  python scripts/benchmark.py --model=efficientnet_lite0 --recipe=units --units=_blocks.8

See converters/reference/benchmark.py for what is measured and how.
"""

from __future__ import annotations

import json

from absl import flags

from classgen_jax._files import write_text
from converters.reference import benchmark
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "googlenet", _cli.MODEL_HELP)
flags.DEFINE_string("recipe", "octaves", f"{_cli.RECIPE_HELP} Its first octave is timed.")
flags.DEFINE_integer("image_size", 224, "Canvas side in pixels.")
flags.DEFINE_integer("batch_size", 8, "Images per batch.")
flags.DEFINE_integer("steps", 10, "Iterations per timed run.")
flags.DEFINE_integer("repeats", 3, "Timed runs after the warm-up.")
flags.DEFINE_enum("dtype", "float32", list(benchmark.DTYPES), "JAX model compute dtype.")
flags.DEFINE_string("json_out", None, "Write the results to this JSON file.")
flags.DEFINE_bool("sweep", False, "Also sweep JAX's batch size 1, 2, 4, ...")
flags.DEFINE_integer("max_batch", 64, "Largest batch size of the sweep.")
flags.DEFINE_bool("torch_sequential", True, "Time the one-image-at-a-time torch loop.")
flags.DEFINE_bool("torch_batched", True, "Time the batched torch loop.")
flags.DEFINE_string("units", "", "A layer: time the recipe for its channels, an image each "
                    "(what generate.py --layer runs), instead of classes.")
flags.DEFINE_bool("breakdown", False, "Also time the model's forward pass and forward+backward "
                  "alone, to show where a step's time goes.")
flags.DEFINE_string("trace_dir", None, "Also trace one compiled octave call (jax.profiler) "
                    "into this folder and print its largest ops.")
flags.DEFINE_integer("atlas", 0, "Only run the atlas end to end for this many classes (0 to "
                     "N-1, PNGs written to a temporary folder) and print where its wall time "
                     "went; --recipe is the whole recipe, --batch_size the atlas's (0: what "
                     "fits the free device memory).")
flags.DEFINE_float("steps_scale", 1.0, "With --atlas: scale every octave's iterations.")
flags.DEFINE_list("flops", [], "Only count FLOPs per image-iteration (and per forward pass) "
                  "of these models at their native sizes; nothing is timed.")


def main(argv):
  del argv
  if FLAGS.flops:
    table = benchmark.flops_table(FLAGS.flops, FLAGS.recipe)
    print(f"{'model':20}{'size':>6}{'GFLOP/image-iteration':>24}{'GFLOP/forward':>15}")
    for name, row in table.items():
      print(f"{name:20}{row['image_size']:>6}{row['gflops_per_image_iter']:>24.2f}"
            f"{row['forward_gflops']:>15.2f}")
    if FLAGS.json_out:
      write_text(FLAGS.json_out, json.dumps(table, indent=1) + "\n")
    return
  if FLAGS.atlas:
    result = benchmark.atlas(FLAGS.model, FLAGS.recipe, FLAGS.atlas, FLAGS.batch_size or None,
                             dtype=FLAGS.dtype, steps_scale=FLAGS.steps_scale)
    print(f"{FLAGS.model} {FLAGS.recipe} atlas, {FLAGS.atlas} classes, batch "
          f"{result['batch_size']}{'' if FLAGS.batch_size else ' (what fits)'}"
          f", {FLAGS.dtype}, steps x{FLAGS.steps_scale:g}; {result['device']} "
          f"x{result['devices']}: {result['images']} images, "
          f"{result['images_per_s']:.2f} images/s\n{result['summary']}")
    if FLAGS.json_out:
      write_text(FLAGS.json_out, json.dumps(result, indent=1) + "\n")
    return
  config = benchmark.Config(
      model=FLAGS.model, recipe=FLAGS.recipe, image_size=FLAGS.image_size,
      batch_size=FLAGS.batch_size, steps=FLAGS.steps, repeats=FLAGS.repeats,
      dtype=FLAGS.dtype, torch_sequential=FLAGS.torch_sequential,
      torch_batched=FLAGS.torch_batched, units=FLAGS.units)
  result = benchmark.run(config)
  if FLAGS.breakdown or FLAGS.trace_dir:
    _, classifier = benchmark.models(config.model)
    if config.dtype != "float32":
      classifier = benchmark.devices.mixed_precision(classifier, benchmark.DTYPES[config.dtype])
    if FLAGS.breakdown:
      result["breakdown"] = benchmark.breakdown(classifier, config,
                                                result["results"]["jax"]["ms_per_step"])
    if FLAGS.trace_dir:
      result["trace"] = benchmark.trace_summary(classifier, config, FLAGS.trace_dir)
  if FLAGS.sweep:
    result["sweep"] = benchmark.sweep(config, FLAGS.max_batch)
  print(benchmark.report(result))
  if FLAGS.json_out:  # atomically: never a half-written file
    write_text(FLAGS.json_out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
  _cli.run(main)
