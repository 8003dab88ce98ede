"""Noise ladders σ_1 > σ_2 > ... > σ_L (Song & Ermon 2019, section 4.1).

The paper chooses {σ_i} as a geometric sequence: σ_1 large enough to cover the
data's spread, σ_L small enough that p_{σ_L} ≈ p_data, and a constant ratio
σ_{i-1}/σ_i > 1. Index 0 is the largest σ, the convention of the official code
and of every model and sampler in this package.
"""

import numpy as np


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
