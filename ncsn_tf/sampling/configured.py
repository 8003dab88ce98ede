"""TODO docstring (from ncsn_tf.sampling.configured)."""

import functools
import weakref

import numpy as np
import tensorflow as tf

from ncsn_tf import config as config_lib
from ncsn_tf import noise
from ncsn_tf.data import toy
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.sampling import langevin
from ncsn_tf.sampling import registry


def uniform_initial_state(shape, num: tf.Tensor, seed: tf.Tensor,
                          data: config_lib.DataConfig) -> tf.Tensor:
  """Annealed Langevin's starting points (the paper's): U[0, 1] for images; for
  toys uniform on [-r, r]^2 with r the toy's plot radius (the box that holds its mass)."""
  full_shape = tf.concat([[num], tf.constant(shape, tf.int32)], 0)
  if data.is_toy:
    radius = toy.get_toy(data.dataset).plot_radius
    return tf.random.stateless_uniform(full_shape, seed, -radius, radius)
  return tf.random.stateless_uniform(full_shape, seed, 0.0, 1.0)


_TIME_SCORES = weakref.WeakKeyDictionary()


def time_score_fn(score_model, sde):
  """score_fn(x, t) = score_model.score_t(x, t, sde), the same object on every call."""
  per_model = _TIME_SCORES.setdefault(score_model, {})
  if id(sde) not in per_model:
    per_model[id(sde)] = functools.partial(score_model.score_t, sde=sde)
  return per_model[id(sde)]


def sampler_settings(sampling: config_lib.SamplingConfig) -> dict:
  """The registry settings of --sampler from the sampling config."""
  s = sampling
  if s.sampler == 'pc':
    return dict(predictor=s.predictor, corrector=s.corrector, num_steps=s.sampling_steps,
                corrector_steps=s.corrector_steps, snr=s.snr, sampling_eps=s.sampling_eps,
                denoise=s.denoise)
  if s.sampler == 'ode':
    return dict(rtol=s.ode_rtol, atol=s.ode_atol, sampling_eps=s.sampling_eps, denoise=s.denoise)
  if s.sampler == 'heun':
    return dict(num_steps=s.sampling_steps, sampling_eps=s.sampling_eps)
  return dict(n_steps_each=s.n_steps_each, step_lr=s.step_lr, denoise=s.denoise)


def describe(sampling: config_lib.SamplingConfig) -> str:
  """'ode(rtol=1e-05, atol=1e-05, ...)': the sampler's name and settings, for logs and exports."""
  settings = ', '.join(f'{k}={v}' for k, v in sampler_settings(sampling).items())
  return f'{sampling.sampler}({settings})'


class ConfiguredSampler:
  """The run's sampler over one score model.

  Args:
    config: the run's Config (model, data and sampling groups are read).
    score_model: a models.score_model.ScoreModel (the EMA network, usually).
    data_shape: the data's shape without the batch axis.

  `sample(num, seed)` -> (samples float32 [num, *shape], trajectory float32
  [K, num, *shape] or None, nfe int): seed an int32 [2] stateless seed, of
  which [seed[0], seed[1]] seeds the starting points and [seed[0], seed[1] +
  1000] the chain (annealed Langevin: the package's seeds before this module).
  Only annealed Langevin records a trajectory (num_snapshots states).
  """

  def __init__(self, config: config_lib.Config, score_model, data_shape):
    self.config = config
    self.score_model = score_model
    self.shape = tuple(int(d) for d in data_shape)
    self.name = config.sampling.sampler
    self.sde = noise.build_sde(config.model)
    self.settings = sampler_settings(config.sampling)
    if self.name != 'ald':
      if self.sde is None or not score_model.is_continuous:
        raise ValueError(f'--sampler={self.name} needs a continuous-σ model with --sde')
      self._sample = registry.make_sampler(self.name, self.sde, **self.settings)
    self.sigmas = tf.constant(np.asarray(score_model.sigmas, np.float32))

  def initial_state(self, num, seed) -> tf.Tensor:
    """Starting points [num, *shape]: uniform for annealed Langevin, else the SDE's prior."""
    if self.name == 'ald':
      return uniform_initial_state(self.shape, num, seed, self.config.data)
    return self.sde.prior_sample(tf.concat([[num], tf.constant(self.shape, tf.int32)], 0), seed)

  def run(self, x_init, chain_seed, num_snapshots: int = 0, condition=None):
    """The chain from x_init: (samples, trajectory or None, nfe int32 tensor).

    condition: None, or a sampling.conditions.Condition (inpainting,
    colourisation) of x_init's shape, which every sampler accepts.
    """
    s = self.config.sampling
    if self.name == 'ald':
      out = langevin.annealed_langevin_dynamics(
          self.score_model.score_index, x_init, self.sigmas, condition, n_steps_each=s.n_steps_each,
          step_lr=s.step_lr, seed=chain_seed, num_snapshots=num_snapshots, denoise=s.denoise)
      samples, trajectory = out if num_snapshots else (out, None)
      nfe = self.score_model.num_scales * s.n_steps_each + int(s.denoise)
      return samples, trajectory, tf.constant(nfe, tf.int32)
    samples, nfe = self._sample(time_score_fn(self.score_model, self.sde), x_init, chain_seed,
                                condition=condition)
    return samples, None, nfe

  def sample(self, num: int, seed, num_snapshots: int = 0, condition=None):
    seed = tf.cast(seed, tf.int32)
    x_init = self.initial_state(num, seed)
    samples, trajectory, nfe = self.run(x_init, seed + tf.constant([0, 1000]), num_snapshots,
                                        condition=condition)
    return samples, trajectory, nfe


_WRAPPED = weakref.WeakKeyDictionary()


def as_score_model(model, sigmas):
  """`model` if it is a ScoreModel (or answers like one: a guided model of
  sampling/guidance.py), else a ladder network s(x, sigma_index) wrapped
  with its ladder, the same wrapper for the same network (trace reuse)."""
  if isinstance(model, ScoreModel) or all(
      hasattr(model, name) for name in ('score_index', 'score_sigma', 'score_t')):
    return model
  if model not in _WRAPPED:
    _WRAPPED[model] = ScoreModel(model, sigmas, continuous=False)
  return _WRAPPED[model]
