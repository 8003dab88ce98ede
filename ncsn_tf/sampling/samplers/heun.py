"""Heun's second-order method on the probability-flow ODE (Karras et al. 2022, EDM Algorithm 1).

EDM writes every SDE's ODE in the scaled variable y = x/α(t) and its noise
level σ(t) = std(t)/α(t) (`sde.sigma_of_t`): y is the data plus N(0, σ² I),
and

    dy/dσ = −σ ∇_y log p_σ(y),   ∇_y log p_σ(y) = α(t) · score_fn(α(t) y, t),  t = t_of_sigma(σ).

For VE, α = 1 and y = x. For VP and sub-VP the same loop runs in y, with each
σ mapped to its time (this file's choice over refusing them): one sampler for
all three SDEs.

The schedule is Karras' ρ = 7 one, from σ(T) down to σ(eps), then 0:

    σ_i = (σ_max^{1/ρ} + i/(N − 1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ,  i < N;  σ_N = 0.

Each of the N steps is an Euler step corrected by the trapezoid rule, except
the last (to σ = 0, where there is no score): NFE = 2N − 1. The final step
to 0 is Tweedie's denoiser at σ_min, so the samples come out noise-free.
"""

import numpy as np
import tensorflow as tf

from ncsn_tf import noise
from ncsn_tf.sampling import callbacks
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling.samplers import registry
from ncsn_tf.sampling.samplers import sigma_space

#: The ρ = 7 schedule (shared with edm_stochastic.py and dpm_solver.py's 'karras').
karras_sigmas = sigma_space.karras_sigmas


def check_settings(sde, *, num_steps, rho, sampling_eps):
  """Raises ValueError (one line) on a bad setting; returns the resolved sampling eps."""
  if not isinstance(sde, noise.SDE):
    raise ValueError(f'sde must be a noise.SDE (VESDE, VPSDE, SubVPSDE), got {type(sde).__name__}')
  # Two σ steps at least: one Heun step from σ_max to σ_min, then the denoising one.
  if not (isinstance(num_steps, (int, np.integer)) and num_steps >= 2):
    raise registry.SettingError('num_steps', f'must be an integer >= 2, got {num_steps!r}')
  if not rho > 0:
    raise registry.SettingError('rho', f'must be > 0, got {rho}')
  return sde.sampling_eps(sampling_eps)


def heun_sample(score_fn, sde, x_init, seed=None, condition=None, callback=None, *, num_steps=18,
                rho=7.0, sampling_eps=None):
  """Deterministic EDM sampling (Heun, ρ schedule) from T to eps, then to σ = 0.

  Args:
    score_fn: (x [N, ...], t float32 [N]) -> score of p_t.
    sde: a noise.SDE.
    x_init: float32 [N, ...] prior draws at t = T.
    seed: unused (deterministic); kept for the common sampler contract.
    condition: None, or a sampling.conditions.Condition, through the score
      (conditions.flow_score): the known coordinates follow y = known + σ z,
      z read off x_init, which Heun's steps follow exactly (the path is linear
      in σ), and end at the known values at σ = 0.
    callback: None, or fn(step, num_steps, y) run on the host after every
      step (sampling/callbacks.py), with y = x/α.
    num_steps: N >= 2 (EDM: 18 for CIFAR-10, 35 NFE).
    rho: the schedule's ρ > 0 (EDM: 7).
    sampling_eps: the smallest time in (0, 1), σ_min = σ(eps); None: the SDE's default.

  Returns:
    (samples float32 [N, ...] at σ = 0, nfe int32 = 2N − 1).
  """
  del seed
  eps = check_settings(sde, num_steps=num_steps, rho=rho, sampling_eps=sampling_eps)
  sigma_min, sigma_max, alpha_max = sigma_space.sigma_range(sde, eps)
  sigmas = karras_sigmas(sigma_min, sigma_max, num_steps, rho)
  # Start in the scaled variable y = x/α(T); σ = 0 is t = 0, where α = 1 and y = x.
  y_init = tf.convert_to_tensor(x_init, tf.float32) / alpha_max
  condition = conditions.prepare(condition, y_init)
  return (_heun_loop(score_fn, sde, y_init, sigmas, condition, callback),
          tf.constant(2 * num_steps - 1, tf.int32))


@tf.function(reduce_retracing=True)
def _heun_loop(score_fn, sde, y, sigmas, condition=None, callback=None):
  """All N steps in one tf.while_loop over the schedule sigmas [N + 1]."""
  hook = callbacks.step_hook(callback)
  sigmas = tf.convert_to_tensor(sigmas, tf.float32)
  num_steps = tf.shape(sigmas)[0] - 1
  if condition is not None:
    score_fn = conditions.conditioned_flow_score(score_fn, sde, condition)

  def slope(y, sigma):  # dy/dσ
    return -sigma * sigma_space.sigma_score(score_fn, sde, y, sigma)

  def body(i, y):
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    d = slope(y, sigma)
    y_euler = y + (sigma_next - sigma) * d
    # The trapezoid correction needs the slope at σ_next, undefined at σ = 0.
    y_next = tf.cond(sigma_next > 0,
                     lambda: y + (sigma_next - sigma) * 0.5 * (d + slope(y_euler, sigma_next)),
                     lambda: y_euler)
    hook(i + 1, num_steps, y_next)
    return i + 1, y_next

  _, y = tf.while_loop(lambda i, y: i < num_steps, body, (tf.constant(0), y))
  if condition is not None:  # σ = 0: the known values, to the bit (the steps leave round-off).
    y = condition.impose(y, 1.0, 0.0, tf.zeros_like(y))
  return y


registry.register(registry.SamplerSpec(
    name='heun', sample=heun_sample, check=check_settings,
    settings={'num_steps': 'sampling_steps', 'sampling_eps': 'sampling_eps'},
    doc="EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1) on the ρ = 7 "
        'σ schedule; 2N − 1 score evaluations'))
