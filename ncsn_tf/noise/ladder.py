"""TODO docstring (from ncsn_tf.noise)."""

import numpy as np
import tensorflow as tf

from ncsn_tf.noise import sde as sde_lib


def _check(condition, message):
  if not condition:
    raise ValueError(message)


def geometric_sigmas(sigma_begin: float, sigma_end: float, num_scales: int) -> np.ndarray:
  """The geometric ladder from `sigma_begin` (σ_1) down to `sigma_end` (σ_L).

  Args:
    sigma_begin: the largest noise level σ_1, > sigma_end.
    sigma_end: the smallest noise level σ_L, > 0.
    num_scales: the number of levels L, >= 1; with L = 1 the single level is
      `sigma_begin` (a single-σ model, as in plain denoising score matching).

  Returns:
    float32 array [L], strictly decreasing, first element `sigma_begin`, last
    `sigma_end`, log-spaced.
  """
  if not sigma_end > 0:
    raise ValueError(f'sigma_end must be > 0, got {sigma_end}')
  if num_scales < 1:
    raise ValueError(f'num_scales must be >= 1, got {num_scales}')
  if num_scales == 1:
    return np.array([sigma_begin], np.float32)
  if not sigma_begin > sigma_end:
    raise ValueError(f'sigma_begin ({sigma_begin}) must be > sigma_end ({sigma_end})')
  return np.exp(np.linspace(np.log(sigma_begin), np.log(sigma_end), num_scales)).astype(np.float32)


def ladder_ratio(sigma_begin: float, sigma_end: float, num_scales: int) -> float:
  """γ = σ_{i-1}/σ_i of the geometric ladder (> 1; needs num_scales >= 2)."""
  if num_scales < 2:
    raise ValueError(f'a ladder ratio needs num_scales >= 2, got {num_scales}')
  return float((sigma_begin / sigma_end)**(1.0 / (num_scales - 1)))


def langevin_variance_ratio(step_lr, gamma: float, n_steps_each: int, sigma_end: float):
  """NCSNv2's technique 4 (Song & Ermon 2020, eq. 6): s_T² / σ_i² after one level.

  For a single data point, p_{σ_i} = N(0, σ_i² I). A chain that starts level i
  distributed as the previous level, N(0, (γ σ_i)² I), and takes T steps
  x ← x + ε_i s + sqrt(2 ε_i) z with ε_i = step_lr · σ_i²/σ_L² (the official
  convention used throughout this package) ends with per-coordinate variance
  s_T², and

      s_T²/σ_i² = (1 − a)^{2T} (γ² − 2a/(1 − (1 − a)²)) + 2a/(1 − (1 − a)²),

  a = step_lr / σ_L², the same at every level. 1 means the chain has reached
  that level's noise scale exactly.

  Args:
    step_lr: the base step ε (float or array), 0 < step_lr < 2 σ_L².
    gamma: the ladder ratio σ_{i-1}/σ_i.
    n_steps_each: T.
    sigma_end: σ_L.
  """
  a = np.asarray(step_lr, np.float64) / sigma_end**2
  stationary = 2.0 * a / (1.0 - (1.0 - a)**2)
  return (1.0 - a)**(2 * n_steps_each) * (gamma**2 - stationary) + stationary


def best_step_lr(gamma: float, n_steps_each: int, sigma_end: float) -> float:
  """The step_lr whose `langevin_variance_ratio` is closest to 1 (NCSNv2 technique 4).

  The ratio is above 1 for every step (the discretised chain's stationary
  variance 2/(2 − a) exceeds 1), so this is its minimiser, found on a
  log-spaced grid over (0, σ_L²) refined twice; relative precision ~1e-4.
  """
  low, high = 1e-8 * sigma_end**2, sigma_end**2
  for _ in range(3):
    grid = np.geomspace(low, high, 2001)
    best = int(np.argmin(np.abs(langevin_variance_ratio(grid, gamma, n_steps_each, sigma_end) - 1)))
    low, high = grid[max(best - 2, 0)], grid[min(best + 2, len(grid) - 1)]
  return float(grid[best])


def nearest_level_index(sigma, sigmas):
  """(index int32 [N], gap float32 [N]): each σ's nearest level of the ladder in log σ.

  sigma: float32 [N] > 0; sigmas: float32 [L] > 0, any order (here index 0
  largest). `gap` = |log σ − log σ_index|; a σ outside the ladder's range maps
  to the nearer end (argmin never leaves [0, L)).
  """
  log_sigma = tf.math.log(tf.cast(sigma, tf.float32))
  log_ladder = tf.math.log(tf.cast(sigmas, tf.float32))
  distance = tf.abs(log_sigma[:, None] - log_ladder[None, :])            # [N, L]
  return tf.argmin(distance, axis=1, output_type=tf.int32), tf.reduce_min(distance, axis=1)




class Ladder:
  """NCSN's geometric ladder σ_0 > ... > σ_{L−1} (index 0 = largest, as everywhere here).

  It is the VE SDE (σ_min = sigma_end, σ_max = sigma_begin) seen at the
  times t_i = T (1 − i/(L − 1)): σ(t_i) = σ_i. `sigma_to_index` maps a σ (or,
  through `time_score_fn`, a time) back to its level, exactly on the ladder.

  Args:
    sigma_begin, sigma_end, num_scales: as `sigmas.geometric_sigmas`.
    T: the VE SDE's end time.
  """

  def __init__(self, sigma_begin: float, sigma_end: float, num_scales: int, T: float = 1.0):
    _check(num_scales >= 2, f'a ladder for the VE SDE needs num_scales >= 2, got {num_scales}')
    self.sigmas = geometric_sigmas(sigma_begin, sigma_end, num_scales)
    self.T = float(T)
    self.times = (self.T * (1.0 - np.arange(num_scales) / (num_scales - 1))).astype(np.float32)
    # Levels are log(γ) apart; a σ within a quarter of that (and 1e-3) of one is on it.
    self._log_tolerance = min(1e-3, 0.25 * np.log(ladder_ratio(sigma_begin, sigma_end,
                                                                          num_scales)))

  @property
  def num_scales(self) -> int:
    return len(self.sigmas)

  def ve_sde(self, **kwargs) -> sde_lib.VESDE:
    """The VE SDE this ladder discretises (kwargs: prior_mean)."""
    return sde_lib.VESDE(float(self.sigmas[-1]), float(self.sigmas[0]), self.T, **kwargs)

  def sigma_to_index(self, sigma):
    """Level index int32 [N] of each σ [N]; raises if a σ is off the ladder.

    Off the ladder (more than the tolerance from every level, in log σ) is a
    ValueError when run eagerly and an InvalidArgumentError inside a graph.
    """
    index, gap = nearest_level_index(sigma, self.sigmas)
    message = f'sigma is not on the ladder ({self.sigmas[0]:g} .. {self.sigmas[-1]:g}, L={self.num_scales})'
    if tf.executing_eagerly():
      _check(bool(tf.reduce_all(gap <= self._log_tolerance)), message)
      return index
    with tf.control_dependencies([tf.debugging.assert_less_equal(gap, self._log_tolerance, message)]):
      return tf.identity(index)

  def time_score_fn(self, index_score_fn, sde: 'sde_lib.SDE | None' = None):
    """A level-indexed network seen as score_fn(x, t): t -> σ(t) -> its level.

    index_score_fn(x, sigma_index int32 [N]) -> score; exact for t on the
    ladder (t_i), an error elsewhere. `sde` defaults to `ve_sde()`.
    """
    sde = sde or self.ve_sde()
    return lambda x, t: index_score_fn(x, self.sigma_to_index(sde.sigma_of_t(t)))

  def index_score_fn(self, time_score_fn):
    """score_fn(x, t) of the ladder's VE SDE seen as score_fn(x, sigma_index): index -> t_i."""
    times = tf.constant(self.times)
    return lambda x, sigma_index: time_score_fn(x, tf.gather(times, sigma_index))
