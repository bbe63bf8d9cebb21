r"""Forward and input-gradient times of strided convs and max-pools, XLA's vs ours;
forwards of unpadded convs and pools ([fwd] rows); with --loop, dense convs as
the generation loop runs them, as convolutions and as matrix products.

  python scripts/benchmark_layers.py
  python scripts/benchmark_layers.py --only=fwd --repeats=10
  python scripts/benchmark_layers.py --only=stem,pool --repeats=20
  python scripts/benchmark_layers.py --loop --batch_size=4

See converters/reference/layer_benchmark.py for what is timed.
"""

from __future__ import annotations

from absl import flags

from converters.reference import layer_benchmark
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 8, "Images per batch.")
flags.DEFINE_integer("repeats", 10, "Timed calls per op and variant (the minimum is shown).")
flags.DEFINE_list("only", [], "Only the ops whose name contains one of these words.")
flags.DEFINE_bool("loop", False, "Time the dense convs of LOOP_OPS inside a jitted loop of "
                  "forward and input gradient, as convolutions and as matrix products (the "
                  "measurement behind _convolutions.patches_help), instead.")


def main(argv):
  del argv
  ops = layer_benchmark.LOOP_OPS if FLAGS.loop else layer_benchmark.OPS
  measure = layer_benchmark.measure_loop if FLAGS.loop else layer_benchmark.measure
  rows = {}
  for op in ops:
    if FLAGS.only and not any(word in op.name for word in FLAGS.only):
      continue
    rows[op.name] = measure(op, FLAGS.batch_size, FLAGS.repeats)
    print(f"  {op.name}: done", flush=True)
  report = layer_benchmark.report_loop if FLAGS.loop else layer_benchmark.report
  print(report(rows, FLAGS.batch_size))


if __name__ == "__main__":
  _cli.run(main)
