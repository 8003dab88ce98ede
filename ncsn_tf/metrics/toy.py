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


def fisher_divergence_overall(fisher_per_sigma, sigmas) -> dict:
  """Summaries of per-level Fisher divergences F_i = ½E_{p_σi}‖s_θ(·, i) − ∇log p_σi‖².

  'mean': (1/L) Σ F_i; 'sigma2_weighted': (1/L) Σ σ_i² F_i, the weighting λ(σ) = σ²
  of the annealed objectives (each level's term of order one).
  """
  fisher = np.asarray(fisher_per_sigma, np.float64)
  sigmas = np.asarray(sigmas, np.float64)
  return {'mean': float(np.mean(fisher)), 'sigma2_weighted': float(np.mean(sigmas**2 * fisher))}


def mixture_weight_error(samples, means, true_weights) -> dict:
  """How far the mode shares of `samples` are from the true weights.

  'total_variation': ½ Σ_k |ŵ_k − w_k| (0 perfect, 1 disjoint); 'max_abs': max_k |ŵ_k − w_k|.
  """
  error = np.abs(mode_weights(samples, means) - np.asarray(true_weights, np.float64))
  return {'total_variation': float(0.5 * error.sum()), 'max_abs': float(error.max())}


def mmd_rbf(x, y, bandwidth: float = 1.0) -> float:
  """Unbiased squared MMD with the Gaussian kernel k(a, b) = exp(−‖a − b‖² / (2h²)), h = bandwidth.

  MMD² = E k(x, x') + E k(y, y') − 2 E k(x, y) (Gretton et al. 2012, the
  U-statistic: diagonal terms excluded). x [N, D], y [M, D]; O(NM) memory, so
  keep N, M of a few thousand.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)

  def kernel_mean(a, b, exclude_diagonal):
    sq = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None] - 2.0 * a @ b.T
    k = np.exp(-np.maximum(sq, 0.0) / (2.0 * bandwidth**2))
    if exclude_diagonal:
      n = len(a)
      return (k.sum() - np.trace(k)) / (n * (n - 1))
    return k.mean()

  return float(kernel_mean(x, x, True) + kernel_mean(y, y, True) - 2.0 * kernel_mean(x, y, False))


def sliced_wasserstein(x, y, *, num_projections: int = 512, seed: int = 0) -> float:
  """Sliced 2-Wasserstein distance SW₂ = (E_θ W₂²(θᵀx, θᵀy))^½, θ uniform on the sphere.

  Each 1-D W₂ between equal-size empirical distributions is the mean squared
  difference of sorted projections. x, y: [N, D] with the same N.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.shape != y.shape:
    raise ValueError(f'sliced_wasserstein needs equal sample shapes, got {x.shape} and {y.shape}')
  theta = np.random.default_rng(seed).standard_normal((x.shape[1], num_projections))
  theta /= np.linalg.norm(theta, axis=0, keepdims=True)
  px, py = np.sort(x @ theta, axis=0), np.sort(y @ theta, axis=0)
  return float(np.sqrt(np.mean((px - py)**2)))


def error_by_density_decile(score, exact_score, log_density) -> np.ndarray:
  """Mean ‖s_θ − ∇log p‖² in each decile of log p (index 0: lowest-density 10 %): [10]."""
  sq_error = np.sum((np.asarray(score, np.float64) - np.asarray(exact_score, np.float64))**2, -1)
  order = np.argsort(np.asarray(log_density))
  return np.array([sq_error[chunk].mean() for chunk in np.array_split(order, 10)])
