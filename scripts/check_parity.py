r"""JAX against torch on this machine's devices (a GPU if there is one).

  python scripts/check_parity.py --models=googlenet,inception_v3,resnet50 --json_out=parity.json

Random torchvision weights with randomised BatchNorm; each head's logits
(max abs error / max |truth|) and the input gradient of one logit (relative
L2) against torch float64 on the CPU, for torch float32 and JAX float32 with
TF32 off on both, and JAX at its default precision (TF32 on a recent GPU).
See converters/reference/parity.py.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from classgen_jax._files import write_text
from classgen_jax.weights import model_spec
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["googlenet", "inception_v3", "resnet50"], "torchvision models.")
flags.DEFINE_integer("batch", 2, "Images per check.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and the images.")
flags.DEFINE_string("json_out", None, "Write the errors here as JSON.")


def main(argv):
  del argv
  try:
    for name in FLAGS.models:
      if model_spec(name).source != "torchvision":
        raise ValueError(f"{name} is not a torchvision model: its parity is tested on its "
                         "real weights in tests/test_efficientnet_lite.py")
  except ValueError as error:
    sys.exit(f"error: {error}")
  from converters.reference import parity  # pylint: disable=g-import-not-at-top

  print("logits error / gradient error against torch float64 on the CPU")
  results = []
  for name in FLAGS.models:
    result = parity.compare(name, batch=FLAGS.batch, seed=FLAGS.seed)
    results.append(result)
    print("\n".join(parity.report_lines(result)), flush=True)
  print(f"torch on {results[0]['devices']['torch']}, JAX on {results[0]['devices']['jax']}")
  if FLAGS.json_out:
    write_text(FLAGS.json_out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
  _cli.run(main)
