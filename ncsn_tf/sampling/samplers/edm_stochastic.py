"""EDM's stochastic sampler (Karras et al. 2022, "Elucidating the Design Space...", Algorithm 2).

heun.py's σ picture, ρ = 7 schedule and Heun steps (Algorithm 1), with
"churn" before each step: at σ_i the state is pushed up to σ̂_i = σ_i (1 + γ_i)
by fresh noise, then Heun steps from σ̂_i to σ_{i+1}:

    γ_i = min(S_churn/N, √2 − 1)  if σ_i ∈ [S_tmin, S_tmax], else 0,
    ŷ_i = y_i + sqrt(σ̂_i² − σ_i²) S_noise ε_i,          ε_i ~ N(0, I),
    d_i = −σ̂_i ∇_y log p_σ̂(ŷ_i)                         (= (ŷ − D(ŷ; σ̂))/σ̂),
    y_{i+1} = ŷ_i + (σ_{i+1} − σ̂_i) d_i,                  then, if σ_{i+1} ≠ 0,
    y_{i+1} = ŷ_i + (σ_{i+1} − σ̂_i) ½ (d_i + d'_i),      d'_i the slope at (y_{i+1}, σ_{i+1}).

Adding noise and then following the probability flow is a discretised
Langevin move on top of the ODE: the churn forgets part of the earlier steps'
errors (EDM, section 4), at the price of the error of removing the extra noise
(it needs more steps than Heun: tests/test_sde_samplers.py).

The slopes are written −σ ∇ log p_σ (heun.py's form) and a step with γ = 0
draws no noise, so with S_churn = 0 every operation is heun.py's and the
samples are heun.heun_sample's to the bit (tested).

One change to Algorithm 2: σ̂ is capped at σ(T). A time-conditioned score model
is defined on [0, T], and at σ_0 = σ(T) any churn would ask it for t > T, so the
first step (and any step with σ_i (1 + γ) > σ(T)) churns only up to σ(T).

NFE = 2N − 1 (N Euler slopes, N − 1 corrections; none into σ = 0), plus
(N − 1)·condition_steps with a 'langevin' condition.

Conditions (conditions.py): 'flow' is heun.py's method. With churn the known
coordinates get the fresh noise too; ŷ's known part is then known + σ̂ z' with
z' again N(0, 1), a point on another path of the same point mass, so the flow
score stays exact for them and the churn acts as a replacement with fresh
noise followed by mixing. 'langevin' adds Langevin moves on the unknown
coordinates at each σ_i, i >= 1 (condition_corrector.py).
"""

import math

import numpy as np
import tensorflow as tf

from ncsn_tf.sampling import callbacks
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling.samplers import condition_corrector
from ncsn_tf.sampling.samplers import heun
from ncsn_tf.sampling.samplers import registry
from ncsn_tf.sampling.samplers import sigma_space

#: EDM's bound on γ_i: σ̂ = σ (1 + γ) at most √2 σ, so a churn at most doubles the variance.
MAX_GAMMA = math.sqrt(2.0) - 1.0


def check_settings(sde, *, num_steps, rho, s_churn, s_tmin, s_tmax, s_noise, sampling_eps,
                   condition_method, condition_steps, condition_snr):
  """Raises ValueError (one line; a SettingError for a setting) before any work; returns eps."""
  eps = heun.check_settings(sde, num_steps=num_steps, rho=rho, sampling_eps=sampling_eps)
  if not s_churn >= 0:
    raise registry.SettingError('s_churn', f'must be >= 0, got {s_churn}')
  if not s_tmin >= 0:
    raise registry.SettingError('s_tmin', f'must be >= 0, got {s_tmin}')
  if not s_tmax >= s_tmin:
    raise registry.SettingError('s_tmax', f'must be >= s_tmin ({s_tmin}), got {s_tmax}')
  if not s_noise > 0:
    raise registry.SettingError('s_noise', f'must be > 0, got {s_noise}')
  condition_corrector.check(condition_method, condition_steps, condition_snr)
  return eps


def churn_schedule(sigmas: np.ndarray, s_churn, s_tmin, s_tmax, s_noise):
  """(sigma_hats float32 [N], noise_stds float32 [N]) for the schedule sigmas float32 [N + 1].

  σ̂_i = min(σ_i (1 + γ_i), σ_0) and the churn's std S_noise sqrt(σ̂_i² − σ_i²),
  in float64 from the float32 levels (γ_i = 0 gives σ̂_i = σ_i exactly, std 0).
  """
  num_steps = len(sigmas) - 1
  levels = sigmas[:-1].astype(np.float64)
  in_range = (levels >= s_tmin) & (levels <= s_tmax)
  gammas = np.where(in_range, min(s_churn / num_steps, MAX_GAMMA), 0.0)
  sigma_hats = np.minimum(levels * (1.0 + gammas), levels[0]).astype(np.float32)
  noise_stds = s_noise * np.sqrt(np.maximum(sigma_hats.astype(np.float64)**2 - levels**2, 0.0))
  return sigma_hats, noise_stds.astype(np.float32)


def edm_stochastic_sample(score_fn, sde, x_init, seed=None, condition=None, callback=None, *,
                          num_steps=18, rho=sigma_space.KARRAS_RHO, s_churn=0.0, s_tmin=0.0,
                          s_tmax=float('inf'), s_noise=1.0, sampling_eps=None,
                          condition_method='langevin', condition_steps=3, condition_snr=0.25):
  """EDM Algorithm 2 from T to σ = 0.

  Args:
    score_fn: (x [N, ...], t float32 [N]) -> score of p_t.
    sde: a noise.SDE.
    x_init: float32 [N, ...] prior draws at t = T.
    seed: int32 [2] stateless seed (step i's churn draws from fold_in(seed, i)); may be
      None only when nothing is random (no churn, no 'langevin' condition).
    condition: None or a conditions.Condition; see condition_method.
    callback: None, or fn(step, num_steps, y) run on the host after every step.
    num_steps: N >= 2 (EDM: 18 for CIFAR-10; 256 for ImageNet-64 with churn).
    rho: the schedule's ρ > 0 (EDM: 7).
    s_churn: S_churn >= 0, the total churn (0 = Algorithm 1; EDM: 40-80 on ImageNet-64).
    s_tmin, s_tmax: the σ range that churns (EDM ImageNet-64: 0.05 and 50).
    s_noise: S_noise > 0, the churn noise's scale (EDM: 1.003 on ImageNet-64).
    sampling_eps: the smallest time in (0, 1), σ_min = σ(eps); None: the SDE's default.
    condition_method: 'flow' (heun.py's) or 'langevin' (plus Langevin moves).
    condition_steps, condition_snr: the 'langevin' condition's moves per level (>= 1) and r > 0.

  Returns:
    (samples float32 [N, ...] at σ = 0, nfe int32 = 2N − 1, + (N − 1)·condition_steps
    with a 'langevin' condition).
  """
  eps = check_settings(sde, num_steps=num_steps, rho=rho, s_churn=s_churn, s_tmin=s_tmin,
                       s_tmax=s_tmax, s_noise=s_noise, sampling_eps=sampling_eps,
                       condition_method=condition_method, condition_steps=condition_steps,
                       condition_snr=condition_snr)
  # heun_sample's own arithmetic for the schedule and the start, so that churn 0 is Heun.
  sigma_min, sigma_max, alpha_max = sigma_space.sigma_range(sde, eps)
  sigmas = sigma_space.karras_sigmas(sigma_min, sigma_max, num_steps, rho)
  sigma_hats, noise_stds = churn_schedule(sigmas, s_churn, s_tmin, s_tmax, s_noise)
  y_init = tf.convert_to_tensor(x_init, tf.float32) / alpha_max
  condition = conditions.prepare(condition, y_init)
  moves = condition_corrector.moves_per_level(condition, condition_method, condition_steps)
  if seed is None and (moves or np.any(noise_stds > 0)):
    raise ValueError('edm_stochastic needs a seed (int32 [2]) when it churns or corrects')
  seed = tf.zeros([2], tf.int32) if seed is None else tf.cast(seed, tf.int32)
  samples = _edm_loop(score_fn, sde, y_init, sigmas, sigma_hats, noise_stds, seed, condition,
                      moves, tf.constant(condition_snr, tf.float32), callback)
  return samples, tf.constant(2 * num_steps - 1 + (num_steps - 1) * moves, tf.int32)


@tf.function(reduce_retracing=True)
def _edm_loop(score_fn, sde, y, sigmas, sigma_hats, noise_stds, seed, condition, moves,
              condition_snr, callback=None):
  """All N steps in one tf.while_loop; sigmas [N + 1], sigma_hats and noise_stds [N]."""
  hook = callbacks.step_hook(callback)
  sigmas = tf.convert_to_tensor(sigmas, tf.float32)
  sigma_hats = tf.convert_to_tensor(sigma_hats, tf.float32)
  noise_stds = tf.convert_to_tensor(noise_stds, tf.float32)
  num_steps = tf.shape(sigmas)[0] - 1
  if condition is not None:
    score_fn = conditions.conditioned_flow_score(score_fn, sde, condition)
  fold_in = tf.random.experimental.stateless_fold_in

  def slope(y, sigma):  # dy/dσ = −σ ∇ log p_σ(y), as heun.py writes it.
    return -sigma * sigma_space.sigma_score(score_fn, sde, y, sigma)

  def churn(i, y):
    return y + noise_stds[i] * tf.random.stateless_normal(tf.shape(y), fold_in(seed, i))

  def correct(i, y):
    return condition_corrector.correct(score_fn, sde, y, sigmas[i], condition, fold_in(seed, i),
                                       moves, condition_snr)

  def body(i, y):
    if moves:  # σ_0 holds the prior draw: corrected from σ_1 on.
      y = tf.cond(i > 0, lambda: correct(i, y), lambda: y)
    sigma_hat, sigma_next = sigma_hats[i], sigmas[i + 1]
    # No draw at all when γ_i = 0: the step is then exactly heun.py's.
    y_hat = tf.cond(noise_stds[i] > 0, lambda: churn(i, y), lambda: y)
    d = slope(y_hat, sigma_hat)
    y_euler = y_hat + (sigma_next - sigma_hat) * d
    y_next = tf.cond(sigma_next > 0,
                     lambda: y_hat + (sigma_next - sigma_hat) * 0.5 * (d + slope(y_euler, sigma_next)),
                     lambda: y_euler)
    hook(i + 1, num_steps, y_next)
    return i + 1, y_next

  _, y = tf.while_loop(lambda i, y: i < num_steps, body, (tf.constant(0), y))
  if condition is not None:  # σ = 0: the known values, to the bit.
    y = condition.impose(y, 1.0, 0.0, tf.zeros_like(y))
  return y


registry.register(registry.SamplerSpec(
    name='edm_stochastic', sample=edm_stochastic_sample, check=check_settings,
    settings={'num_steps': 'sampling_steps', 's_churn': 's_churn', 's_tmin': 's_tmin',
              's_tmax': 's_tmax', 's_noise': 's_noise', 'sampling_eps': 'sampling_eps',
              'condition_method': 'condition_method', 'condition_steps': 'condition_steps',
              'condition_snr': 'condition_snr'},
    doc="EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): Heun steps with "
        'churn; 2N − 1 score evaluations'))
