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
