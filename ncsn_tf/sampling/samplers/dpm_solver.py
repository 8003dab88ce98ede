"""DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095), multistep, in data-prediction form, for VE, VP, sub-VP.

Variables (sigma_space.py). Every SDE is solved in y = x/α(t) with its noise
level σ(t) = std(t)/α(t), and the data prediction is the denoiser
D(y, σ) = y + σ² ∇_y log p_σ(y). There the probability-flow ODE is
dy/dσ = (y − D)/σ for all three SDEs; with λ = −log σ (half the log-SNR: for
VP the paper's λ = log(α/std) is the same number) it is dy/dλ = D − y, whose
exact solution from λ_s to λ_t = λ_s + h is the paper's variation-of-constants
formula for data prediction (α = 1 in y):

    y_t = e^{−h} y_s + ∫_0^h e^{−(h − u)} D(λ_s + u) du.                     (1)

Replacing D by its Taylor polynomial in u, D_s + u D' + (u²/2) D'', and
integrating exactly (φ1 = expm1(−h), φ2 = φ1/h + 1, φ3 = φ2/h − 1/2):

    ∫_0^h e^{−(h−u)} du = −φ1,  ∫_0^h e^{−(h−u)} u du = h φ2,
    ∫_0^h e^{−(h−u)} (u²/2) du = h²/2 − h − φ1 = −h² φ3,

so y_t = e^{−h} y_s − φ1 D_s + h φ2 D' − h² φ3 D''. The multistep solvers
estimate the derivatives from the last denoised values (r_j = h_{i−j}/h):

- order 1 (DDIM): y_{i+1} = (σ_{i+1}/σ_i) y_i + (1 − σ_{i+1}/σ_i) D_i.
- order 2 (2M, the paper's Algorithm 2): h D' ≈ (D_i − D_{i−1})/r_0, with the
  paper's weights (1 + 1/(2 r_0)) D_i − 1/(2 r_0) D_{i−1} in place of D_i.
- order 3 (3M): D1_0 = (D_i − D_{i−1})/r_0, D1_1 = (D_{i−1} − D_{i−2})/r_1,
  D1 = D1_0 + r_0/(r_0 + r_1) (D1_0 − D1_1) ≈ h D', D2 = (D1_0 − D1_1)/(r_0 + r_1)
  ≈ (h²/2) D'' (Taylor expansion of the differences), hence
  y_{i+1} = e^{−h} y_i − φ1 D_i + φ2 D1 − 2 φ3 D2.
  The DPM-Solver repository's multistep third order (and k-diffusion's 3M) writes
  φ3 D2, half the exact term: its error then falls ~4x per doubling of the steps
  (second order) where 2 φ3 D2 falls 12-22x (tests/test_sde_samplers.py, on a
  Gaussian's exact flow). At a few long steps the exact term extrapolates
  harder; below about 15 steps use order 2 (docs/sde.md, "DPM-Solver++").

Every step is y_{i+1} = ratio_i y_i + Σ_j w_ij D_{i−j}; the ratios and weights
depend only on the schedule, so `step_weights` computes them once in float64.

Schedule and NFE: num_steps = K levels σ_0 = σ(T) > ... > σ_{K−1} = σ(eps)
(sigma_space.py: 'logsnr', uniform in λ, the paper's choice for pixel models;
'karras', EDM's ρ = 7; 'time_uniform'), then σ_K = 0. Each step evaluates D
once at its start: NFE = K exactly. The last step, σ_min -> 0, is the
first-order step with σ_K/σ_{K−1} = 0, i.e. y = D(y, σ_min): the paper's
"denoise to zero" final step, part of the schedule and counted. The multistep
warm-up uses order min(order, i + 1) at step i; with fewer than 15 steps the
last steps also drop to order K − i (the repository's lower_order_final, which
the paper recommends to stabilise the large final steps). Samples come out at
σ = 0, where α = 1 and y = x.

VE works as VP does. The pure-noise reports of DPM-Solver on score_sde's VE
models (LuChengTHU/dpm-solver issues 5 and 19) come from feeding a VE model
through a VP noise schedule (the wrong process's α and std); here α = 1 and
σ = σ_VE(t), so nothing VE-specific is needed (tested at σ_max = 20 and 50).

Conditions (conditions.py): 'flow' is Heun's method (the known coordinates on
the point mass's path through the score; D's known coordinates are then the
known values, so every step keeps them on known + σ z); biased where the
unknown coordinates depend on the known ones. 'langevin' adds condition_steps
Langevin moves on the unknown coordinates at each σ_i, i >= 1
(condition_corrector.py) and steps at order 1: the moves put the state off the
trajectory on which the multistep history was taken, and extrapolating D
through them amplifies their noise (2M with 3 moves at r = 0.2 on the ρ = 0.8
Gaussian: the conditional variance +19%, DDIM +7%).
"""

import numpy as np
import tensorflow as tf

from ncsn_tf import noise
from ncsn_tf.sampling import callbacks
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling.samplers import condition_corrector
from ncsn_tf.sampling.samplers import registry
from ncsn_tf.sampling.samplers import sigma_space

ORDERS = (1, 2, 3)
SCHEDULES = ('logsnr', 'karras', 'time_uniform')
#: Below this many steps the last steps drop to lower order (lower_order_final; the
#: DPM-Solver repository applies it "for steps < 15").
LOWER_ORDER_FINAL_BELOW = 15
#: Denoised values the loop carries: the highest order's.
HISTORY = max(ORDERS)


def sigma_schedule(sde, num_steps: int, schedule: str, rho: float, eps: float) -> np.ndarray:
  """float64 [num_steps + 1]: σ(T) = σ_0 > ... > σ_{K−1} = σ(eps), then σ_K = 0.

  With num_steps = 1 the only level is σ(T): one denoising step from the prior.
  """
  sigma_min, sigma_max, _ = sigma_space.sigma_range(sde, eps)
  if schedule == 'logsnr':
    return sigma_space.logsnr_sigmas(sigma_min, sigma_max, num_steps)
  if schedule == 'karras':
    return sigma_space.karras_sigmas(sigma_min, sigma_max, num_steps, rho).astype(np.float64)
  return sigma_space.time_sigmas(sde, eps, num_steps)


def step_orders(num_steps: int, order: int, lower_order_final: bool) -> np.ndarray:
  """int [num_steps]: each step's order (warm-up, lower order at the end, 1 into σ = 0)."""
  steps = np.arange(num_steps)
  orders = np.minimum(order, steps + 1)
  if lower_order_final and num_steps < LOWER_ORDER_FINAL_BELOW:
    orders = np.minimum(orders, num_steps - steps)
  orders[-1] = 1  # Into σ = 0 (λ = ∞) only D(y, σ_min) is defined.
  return orders


def _phis(h):
  """φ1 = expm1(−h), φ2 = φ1/h + 1, φ3 = φ2/h − 1/2 (float64; see the module docstring)."""
  phi1 = np.expm1(-h)
  phi2 = phi1 / h + 1.0
  return phi1, phi2, phi2 / h - 0.5


def step_weights(sigmas: np.ndarray, orders: np.ndarray):
  """(ratios float64 [K], weights float64 [K, HISTORY]): y_{i+1} = ratio_i y_i + Σ_j w_ij D_{i−j}.

  sigmas: [K + 1] decreasing, the last 0; orders: [K] from `step_orders`.
  """
  num_steps = len(orders)
  lambdas = -np.log(sigmas[:-1])                       # λ_i of the K positive levels
  ratios = np.append(sigmas[1:-1] / sigmas[:-2], 0.0)  # σ_{i+1}/σ_i = e^{−h}; 0 into σ = 0
  weights = np.zeros([num_steps, HISTORY])
  for i, order in enumerate(orders):
    if i == num_steps - 1:  # y = D(y, σ_min).
      weights[i, 0] = 1.0
      continue
    h = lambdas[i + 1] - lambdas[i]
    phi1, phi2, phi3 = _phis(h)
    if order == 1:
      weights[i, 0] = -phi1
    elif order == 2:
      r0 = (lambdas[i] - lambdas[i - 1]) / h
      weights[i, :2] = -phi1 * np.array([1.0 + 0.5 / r0, -0.5 / r0])
    else:
      r0, r1 = (lambdas[i] - lambdas[i - 1]) / h, (lambdas[i - 1] - lambdas[i - 2]) / h
      # The divided differences as weight vectors over (D_i, D_{i−1}, D_{i−2}).
      d1_0 = np.array([1.0, -1.0, 0.0]) / r0
      d1_1 = np.array([0.0, 1.0, -1.0]) / r1
      d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)      # ≈ h D'
      d2 = (d1_0 - d1_1) / (r0 + r1)                   # ≈ (h²/2) D''
      weights[i] = -phi1 * np.array([1.0, 0.0, 0.0]) + phi2 * d1 - 2.0 * phi3 * d2
  return ratios, weights


def check_settings(sde, *, num_steps, order, schedule, rho, lower_order_final, sampling_eps,
                   condition_method, condition_steps, condition_snr):
  """Raises ValueError (one line; a SettingError for a setting) before any work; returns eps."""
  del lower_order_final
  if not isinstance(sde, noise.SDE):
    raise ValueError(f'sde must be a noise.SDE (VESDE, VPSDE, SubVPSDE), got {type(sde).__name__}')
  if not (isinstance(num_steps, (int, np.integer)) and num_steps >= 1):
    raise registry.SettingError('num_steps', f'must be an integer >= 1, got {num_steps!r}')
  if order not in ORDERS:
    raise registry.SettingError('order', f'must be one of {", ".join(map(str, ORDERS))}, '
                                f'got {order!r}')
  if schedule not in SCHEDULES:
    raise registry.SettingError('schedule', f'must be one of {", ".join(SCHEDULES)}, '
                                f'got {schedule!r}')
  if not rho > 0:
    raise registry.SettingError('rho', f'must be > 0, got {rho}')
  condition_corrector.check(condition_method, condition_steps, condition_snr)
  return sde.sampling_eps(sampling_eps)


def dpm_solver_sample(score_fn, sde, x_init, seed=None, condition=None, callback=None, *,
                      num_steps=20, order=2, schedule='logsnr', rho=sigma_space.KARRAS_RHO,
                      lower_order_final=True, sampling_eps=None, condition_method='langevin',
                      condition_steps=3, condition_snr=0.25):
  """DPM-Solver++ sampling from T to σ = 0 (deterministic without a 'langevin' condition).

  Args:
    score_fn: (x [N, ...], t float32 [N]) -> score of p_t.
    sde: a noise.SDE (VE, VP, sub-VP).
    x_init: float32 [N, ...] prior draws at t = T.
    seed: int32 [2]; drawn from only by a 'langevin' condition.
    condition: None or a conditions.Condition; see condition_method.
    callback: None, or fn(step, num_steps, y) run on the host after every step
      (sampling/callbacks.py), y = x/α.
    num_steps: K >= 1 levels = score evaluations (the paper: 10-20).
    order: 1 (DDIM), 2 (2M, the paper's) or 3 (3M).
    schedule: 'logsnr', 'karras' or 'time_uniform' (sigma_space.py).
    rho: the karras schedule's ρ > 0.
    lower_order_final: below 15 steps the last steps use order K − i.
    sampling_eps: the smallest time in (0, 1), σ_min = σ(eps); None: the SDE's default.
    condition_method: 'flow' or 'langevin' (module docstring; 'langevin' steps at order 1).
    condition_steps: Langevin moves per level with a 'langevin' condition (>= 1).
    condition_snr: those moves' r > 0 in ε = 2 (r ‖z‖/‖s‖)².

  Returns:
    (samples float32 [N, ...] at σ = 0, nfe int32 = K, + (K − 1)·condition_steps with
    a 'langevin' condition).
  """
  eps = check_settings(sde, num_steps=num_steps, order=order, schedule=schedule, rho=rho,
                       lower_order_final=lower_order_final, sampling_eps=sampling_eps,
                       condition_method=condition_method, condition_steps=condition_steps,
                       condition_snr=condition_snr)
  _, _, alpha_max = sigma_space.sigma_range(sde, eps)
  y_init = tf.convert_to_tensor(x_init, tf.float32) / alpha_max
  condition = conditions.prepare(condition, y_init)
  moves = condition_corrector.moves_per_level(condition, condition_method, condition_steps)
  if moves and seed is None:
    raise ValueError('dpm_solver with condition_method langevin needs a seed (int32 [2])')
  sigmas = sigma_schedule(sde, num_steps, schedule, rho, eps)
  ratios, weights = step_weights(sigmas, step_orders(num_steps, 1 if moves else order,
                                                     lower_order_final))
  seed = tf.zeros([2], tf.int32) if seed is None else tf.cast(seed, tf.int32)
  samples = _dpm_loop(score_fn, sde, y_init, tf.constant(sigmas[:-1], tf.float32),
                      tf.constant(ratios, tf.float32), tf.constant(weights, tf.float32), seed,
                      condition, moves, tf.constant(condition_snr, tf.float32), callback)
  return samples, tf.constant(num_steps + (num_steps - 1) * moves, tf.int32)


@tf.function(reduce_retracing=True)
def _dpm_loop(score_fn, sde, y, sigmas, ratios, weights, seed, condition, moves, condition_snr,
              callback=None):
  """All K steps in one tf.while_loop.

  sigmas float32 [K] (the positive levels), ratios [K], weights [K, HISTORY]; the
  loop carries y [N, ...] and the last HISTORY denoised values [HISTORY, N, ...]
  (newest first; entries not filled yet are zero, with zero weight).
  """
  hook = callbacks.step_hook(callback)
  num_steps = tf.shape(sigmas)[0]
  if condition is not None:
    score_fn = conditions.conditioned_flow_score(score_fn, sde, condition)

  def correct(i, y):
    level_seed = tf.random.experimental.stateless_fold_in(seed, i)
    return condition_corrector.correct(score_fn, sde, y, sigmas[i], condition, level_seed, moves,
                                       condition_snr)

  def body(i, y, history):
    if moves:  # σ_0 holds the prior draw: corrected from σ_1 on.
      y = tf.cond(i > 0, lambda: correct(i, y), lambda: y)
    denoised = sigma_space.denoise(score_fn, sde, y, sigmas[i])
    history = tf.concat([denoised[None], history[:-1]], axis=0)
    # One contraction for Σ_j w_ij D_{i−j}: no chain of adds for grappler to merge
    # into an AddN in the loop (langevin.langevin_update explains why that matters).
    y = ratios[i] * y + tf.tensordot(weights[i], history, axes=1)
    hook(i + 1, num_steps, y)
    return i + 1, y, history

  history = tf.stack([tf.zeros_like(y)] * HISTORY)
  _, y, _ = tf.while_loop(lambda i, y, history: i < num_steps, body, (tf.constant(0), y, history))
  if condition is not None:  # σ = 0: the known values to the bit (D gives them up to round-off).
    y = condition.impose(y, 1.0, 0.0, tf.zeros_like(y))
  return y


registry.register(registry.SamplerSpec(
    name='dpm_solver', sample=dpm_solver_sample, check=check_settings,
    settings={'num_steps': 'sampling_steps', 'order': 'solver_order',
              'schedule': 'sigma_schedule', 'sampling_eps': 'sampling_eps',
              'condition_method': 'condition_method', 'condition_steps': 'condition_steps',
              'condition_snr': 'condition_snr'},
    doc='DPM-Solver++ (Lu et al. 2022), multistep in data-prediction form, for VE, VP and '
        'sub-VP; K score evaluations for K steps'))
