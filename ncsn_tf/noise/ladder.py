"""NCSN's noise ladder σ_1 > σ_2 > ... > σ_L (Song & Ermon 2019, section 4.1), and σ -> level.

The paper chooses {σ_i} as a geometric sequence: σ_1 large enough to cover the
data's spread, σ_L small enough that p_{σ_L} ≈ p_data, and a constant ratio
σ_{i-1}/σ_i > 1. Index 0 is the largest σ, the convention of the official code
and of every model and sampler in this package. `level_index` is the one
σ -> level lookup; `Ladder` is the ladder seen as the VE SDE at its levels'
times, so a ladder network serves the SDE samplers on the ladder.
"""

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


#: How near a level a σ must be to be on the ladder: relative, in σ (compared in
#: log σ, where the relative distance is |Δ log σ| to first order). float32 round
#: trips through a time (σ -> t -> σ) stay near 1e-6; neighbouring levels of even
#: a fine ladder (L = 1000 over 4 decades) are 1e-2 apart.
LADDER_RTOL = 1e-4


def level_index(sigma, sigmas):
  """The ladder level int32 [N] of each σ float32 [N]; an error for a σ off the ladder.

  The one σ -> level lookup of the package (ScoreModel, Ladder). Off the
  ladder (further than LADDER_RTOL from every level), tf.errors.InvalidArgumentError
  with one line naming the offending σ values and the ladder, eagerly and in a graph.
  """
  sigma = tf.cast(sigma, tf.float32)
  sigmas = np.asarray(sigmas, np.float32)
  index, gap = nearest_level_index(sigma, sigmas)
  off = gap > LADDER_RTOL
  message = (f'sigma off the ladder ({sigmas[0]:g} .. {sigmas[-1]:g}, L={sigmas.size}, '
             f'relative tolerance {LADDER_RTOL:g}); a ladder network answers only on it:')
  if tf.executing_eagerly():
    # Eagerly the values are at hand: put them in the one line (Assert's
    # eager message puts its data on a second line).
    if bool(tf.reduce_any(off)):
      values = ', '.join(f'{v:g}' for v in tf.boolean_mask(sigma, off).numpy()[:5])
      raise tf.errors.InvalidArgumentError(None, None, f'{message} {values}')
    return index
  check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(off)),
                              [message, tf.boolean_mask(sigma, off)], summarize=5)
  with tf.control_dependencies([check]):
    return tf.identity(index)




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

  @property
  def num_scales(self) -> int:
    return len(self.sigmas)

  def ve_sde(self, **kwargs) -> sde_lib.VESDE:
    """The VE SDE this ladder discretises (kwargs: prior_mean)."""
    return sde_lib.VESDE(float(self.sigmas[-1]), float(self.sigmas[0]), self.T, **kwargs)

  def sigma_to_index(self, sigma):
    """Level index int32 [N] of each σ [N]; InvalidArgumentError if a σ is off the
    ladder (`level_index`)."""
    return level_index(sigma, self.sigmas)

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
