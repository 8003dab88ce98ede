"""Exact metrics for toy distributions (their scores are known in closed form).

All functions take TensorFlow or numpy inputs and return numpy values.
"""

import numpy as np
import tensorflow as tf


def fisher_divergence(score, exact_score) -> float:
  """½ E‖s_θ(x) − ∇ log p(x)‖² from scores evaluated at samples x ~ p: [N, D] each."""
  diff = np.asarray(score, np.float64) - np.asarray(exact_score, np.float64)
  return float(0.5 * np.mean(np.sum(diff**2, axis=-1)))


def relative_score_error(score, exact_score) -> float:
  """E‖s_θ − s‖² / E‖s‖²: 0 is perfect, 1 is as wrong as predicting zero."""
  score = np.asarray(score, np.float64)
  exact_score = np.asarray(exact_score, np.float64)
  return float(np.mean(np.sum((score - exact_score)**2, -1)) / np.mean(np.sum(exact_score**2, -1)))


def mode_weights(samples, means) -> np.ndarray:
  """The share of samples nearest each mean: [N, D], [K, D] -> [K], sums to 1.

  Samples that are not finite are assigned to no mode (the shares then sum to
  less than 1, which shows a diverged sampler rather than hiding it).
  """
  samples = np.asarray(samples, np.float64)
  means = np.asarray(means, np.float64)
  finite = np.all(np.isfinite(samples), axis=-1)
  nearest = np.argmin(np.sum((samples[finite, None, :] - means[None])**2, -1), axis=-1)
  return np.bincount(nearest, minlength=len(means)) / max(len(samples), 1)


def per_sigma_score_errors(score_fn, dist, sigmas, *, num: int = 4096, seed: int = 0):
  """Fisher divergence and relative error of a learned score at every level.

  x ~ p_σ (data plus σ noise) at each level, compared with `dist`'s exact
  perturbed score. Returns dict of lists [L]: 'fisher', 'relative'.
  """
  fisher, relative = [], []
  for i, sigma in enumerate(np.asarray(sigmas, np.float32)):
    x = dist.sample(num, seed=[seed, i]) + sigma * tf.random.stateless_normal(
        [num, dist.dim], seed=[seed + 1, i])
    learned = score_fn(x, tf.fill([num], i))
    exact = dist.perturbed_score(x, sigma)
    fisher.append(fisher_divergence(learned, exact))
    relative.append(relative_score_error(learned, exact))
  return {'fisher': fisher, 'relative': relative}
