"""TODO docstring (from ncsn_tf.modes)."""

import numpy as np


def _rmse(a, b) -> float:
  return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b)**2)))


def _rmse_between(completions) -> float | None:
  """RMSE between two completions of one image, over all pairs; None for one completion.

  For a sampler of the true conditional the original is one more draw from it, so
  this equals the completions' RMSE against the originals (a calibration check).
  """
  k = completions.shape[1]
  if k < 2:
    return None
  pairs = [np.mean((completions[:, i] - completions[:, j]).astype(np.float64)**2)
           for i in range(k) for j in range(i + 1, k)]
  return float(np.sqrt(np.mean(pairs)))
