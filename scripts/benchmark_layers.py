r"""Forward and input-gradient times of strided convs and max-pools, XLA's vs ours;
forwards of unpadded convs and pools ([fwd] rows).

  python scripts/benchmark_layers.py
  python scripts/benchmark_layers.py --only=fwd --repeats=10
  python scripts/benchmark_layers.py --only=stem,pool --repeats=20

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


def main(argv):
  del argv
  rows = {}
  for op in layer_benchmark.OPS:
    if FLAGS.only and not any(word in op.name for word in FLAGS.only):
      continue
    rows[op.name] = layer_benchmark.measure(op, FLAGS.batch_size, FLAGS.repeats)
    print(f"  {op.name}: done", flush=True)
  print(layer_benchmark.report(rows, FLAGS.batch_size))


if __name__ == "__main__":
  _cli.run(main)
