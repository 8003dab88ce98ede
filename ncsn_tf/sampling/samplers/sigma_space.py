"""The σ picture the deterministic samplers share (Karras et al. 2022, section 2), and their schedules.

Every SDE's state x at time t is seen as y = x/α(t): the data plus N(0, σ² I)
noise with σ = std(t)/α(t) (`sde.sigma_of_t`). Its score and its denoiser
(Tweedie's E[x_0 | y]) are

    ∇_y log p_σ(y) = α(t) · score_fn(α(t) y, t),   t = sde.t_of_sigma(σ),
    D(y, σ) = y + σ² ∇_y log p_σ(y),

and the probability-flow ODE of all three SDEs (VE, VP, sub-VP) is the same
dy/dσ = −σ ∇_y log p_σ(y) = (y − D(y, σ))/σ. At σ = 0 (t = 0) α = 1, so y = x.
Heun (heun.py), EDM's stochastic sampler (edm_stochastic.py) and DPM-Solver++
(dpm_solver.py) all step in y over a decreasing σ schedule that ends at 0.

Schedules are float arrays σ_0 = σ(T) > ... > σ_{K−1} = σ(eps), then σ_K = 0:

- `karras_sigmas`: EDM's ρ schedule, uniform in σ^{1/ρ} (ρ = 7);
- `logsnr_sigmas`: uniform in λ = −log σ (half the log signal-to-noise ratio:
  for VP λ = log(α/std), the same number), DPM-Solver's choice for pixel models;
- `time_sigmas`: uniform in t (score_sde's grid), mapped to σ(t).
"""

import numpy as np
import tensorflow as tf

from ncsn_tf.noise import expand_to

#: EDM's ρ (Karras et al. 2022, eq. 5): larger ρ puts more steps at small σ.
KARRAS_RHO = 7.0


def sigma_range(sde, eps: float) -> tuple:
  """(σ_min = σ(eps), σ_max = σ(T), α(T)) as Python floats, also inside a tf.function."""
  with tf.init_scope():  # Python constants, also when called while tracing.
    sigma_min, sigma_max = sde.sigma_of_t([eps, sde.T]).numpy()
    alpha_max = float(sde.mean_coeff([sde.T])[0])
  return float(sigma_min), float(sigma_max), alpha_max


def karras_sigmas(sigma_min: float, sigma_max: float, num_steps: int,
                  rho: float = KARRAS_RHO) -> np.ndarray:
  """float32 [num_steps + 1]: σ_max = σ_0 > ... > σ_{N−1} = σ_min, then σ_N = 0.

  σ_i = (σ_max^{1/ρ} + i/(N − 1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i < N; one level
  (N = 1) is σ_max alone.
  """
  ramp = np.linspace(0.0, 1.0, num_steps) if num_steps > 1 else np.zeros([1])
  inv_rho_max, inv_rho_min = sigma_max**(1.0 / rho), sigma_min**(1.0 / rho)
  sigmas = (inv_rho_max + ramp * (inv_rho_min - inv_rho_max))**rho
  return np.append(sigmas, 0.0).astype(np.float32)


def logsnr_sigmas(sigma_min: float, sigma_max: float, num_steps: int) -> np.ndarray:
  """float64 [num_steps + 1]: uniform in λ = −log σ from σ_max to σ_min, then 0."""
  levels = np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_steps))
  return np.append(levels, 0.0)


def time_sigmas(sde, eps: float, num_steps: int) -> np.ndarray:
  """float64 [num_steps + 1]: σ(t) at t uniform from T to eps, then 0."""
  times = np.linspace(sde.T, eps, num_steps).astype(np.float32)
  with tf.init_scope():
    levels = sde.sigma_of_t(times).numpy().astype(np.float64)
  return np.append(levels, 0.0)


def sigma_score(score_fn, sde, y, sigma):
  """∇_y log p_σ(y), float32 [N, ...], at one scalar σ > 0 (float or float32 tensor).

  y: float32 [N, ...] in the σ picture; score_fn(x [N, ...], t float32 [N]).
  """
  t = sde.t_of_sigma(tf.fill([tf.shape(y)[0]], sigma))
  alpha = expand_to(sde.mean_coeff(t), y)
  return alpha * score_fn(alpha * y, t)


def denoise(score_fn, sde, y, sigma):
  """D(y, σ) = y + σ² ∇_y log p_σ(y) = E[x_0 | y], float32 [N, ...]: one score evaluation."""
  return y + sigma**2 * sigma_score(score_fn, sde, y, sigma)
