"""What ``generate`` returns: a ``Generation`` (and its ``Snapshots``).

Data contract: images are NHWC float32 in [0, 1], clipped; every per-image
array is ordered as the images (target-major: all restarts of the first
target, then the next).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from classgen_jax.metrics import Trace


class GenerationError(RuntimeError):
  """The optimisation produced NaN or Inf."""


@dataclasses.dataclass
class Snapshots:
  """Images and logits every ``snapshot_every`` iterations, per octave.

  Attributes:
    images: one ``(N, frames, H, W, 3)`` array per octave (canvas sizes
      differ between octaves). During a cyclic resize the canvas changes
      size within the octave: each frame holds its image in the top-left
      corner, ``sides`` gives its side (``image`` cuts it out).
    logits: one ``(N, frames, classes)`` array per octave: the main head's
      logits for the frame's image as it is (whole, at its side), not for
      the jittered, cropped or resized view the step showed the model.
    iterations: one ``(frames,)`` array per octave, the global iteration
      index of each frame (the image *before* that iteration's update).
    sides: one ``(frames,)`` array per octave, each frame's canvas side.
  """
  images: list[np.ndarray]
  logits: list[np.ndarray]
  iterations: list[np.ndarray]
  sides: list[np.ndarray]

  def image(self, index: int, octave: int, frame: int) -> np.ndarray:
    """Image ``index``'s frame ``frame`` of octave ``octave``, ``(side, side, 3)``."""
    side = int(self.sides[octave][frame])
    return self.images[octave][index, frame, :side, :side]


@dataclasses.dataclass
class Generation:
  """What ``generate`` returns.

  Attributes:
    images: ``(N, H, W, 3)`` float32 in [0, 1]; image ``j`` is target
      ``targets[j]``, restart ``restarts[j]``.
    targets, restarts: ``(N,)`` int arrays.
    target_logit, probability, rank: ``(N,)`` the classifier's main-head
      logit, softmax probability and rank (0 = top-1) of the target for the
      final image as returned (clipped to [0, 1]), resized to the
      classifier's native input size: what a reader of the PNG would get.
      With a recipe for units (``Recipe.units``): the unit's value, NaN
      (a unit has no probability) and its rank among the family's units.
    trace: per-iteration records (``Trace`` of ``(iterations, N)`` arrays).
    stability: ``{"top1_fraction", "zscore_jitter"}``, each ``(N,)``, and
      the same per octave, ``{"top1_fraction_per_octave",
      "zscore_jitter_per_octave"}``, each ``(N, octaves)``; see
      ``metrics.stability``.
    snapshots: with ``snapshot_every > 0``.
    seconds: wall-clock time, compilation included.
    compile_seconds: the part of it spent waiting for programs to compile
      (a later octave's compile that ran while an earlier octave ran
      counts only for what was left of it when its octave started).
    rank_as_optimised: ``(N,)`` the target's rank for the final canvas as
      the optimisation left it: unclipped, at the canvas size, not resized.
      Adversarial images (the gradient and sign recipes) rank first here and
      lose it once clipped and resized.
    importance: with an octave that keeps it (``Octave.importance``),
      ``(N, H, W)``: MACO's importance map of the last such octave, the sum
      over its steps of the objective's gradient's size on each pixel;
      else None.
    top_class, top_probability: ``(N,)`` the class the model ranks first
      for the final image (as ``probability``'s) and its probability.
  """
  images: np.ndarray
  targets: np.ndarray
  restarts: np.ndarray
  target_logit: np.ndarray
  probability: np.ndarray
  rank: np.ndarray
  trace: Trace
  stability: dict[str, np.ndarray]
  snapshots: Snapshots | None = None
  seconds: float = 0.0
  rank_as_optimised: np.ndarray | None = None
  compile_seconds: float = 0.0
  importance: np.ndarray | None = None
  top_class: np.ndarray | None = None
  top_probability: np.ndarray | None = None


def concatenate(parts: list[Generation]) -> Generation:
  """The batches of one call as one ``Generation``, in order."""
  if len(parts) == 1:
    return parts[0]
  cat = lambda *xs: np.concatenate(xs, axis=0)  # noqa: E731
  snapshots = None
  if parts[0].snapshots is not None:
    snapshots = Snapshots(
        [cat(*xs) for xs in zip(*(p.snapshots.images for p in parts))],
        [cat(*xs) for xs in zip(*(p.snapshots.logits for p in parts))],
        parts[0].snapshots.iterations, parts[0].snapshots.sides)
  trace = Trace(*(np.concatenate(xs, axis=1) for xs in zip(*(p.trace for p in parts))))
  return Generation(
      images=cat(*(p.images for p in parts)), targets=cat(*(p.targets for p in parts)),
      restarts=cat(*(p.restarts for p in parts)),
      target_logit=cat(*(p.target_logit for p in parts)),
      probability=cat(*(p.probability for p in parts)),
      rank=cat(*(p.rank for p in parts)), trace=trace,
      stability={k: cat(*(p.stability[k] for p in parts)) for k in parts[0].stability},
      snapshots=snapshots, rank_as_optimised=cat(*(p.rank_as_optimised for p in parts)),
      importance=None if parts[0].importance is None else cat(*(p.importance for p in parts)),
      **{field: None if getattr(parts[0], field) is None
         else cat(*(getattr(p, field) for p in parts))
         for field in ("top_class", "top_probability")})
