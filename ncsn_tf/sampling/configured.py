"""The configured sampler: where a Config becomes a noise process, a sampler and its seeds.

Every caller that draws samples (--mode=sample and the snapshots during
training through sampling/draw.py, evaluation, likelihoods of samples, the
export's signatures, the Python API) goes through `ConfiguredSampler`, so a
sampler added to the registry (ncsn_tf/sampling/samplers/) reaches all of
them through one setting, `--sampler`, and every caller seeds it from one
table, `STREAMS`.

- `--sampler=ald`: the paper's annealed Langevin dynamics on the ladder
  (sampling/langevin.py), from uniform noise (`uniform_initial_state`), with
  the network asked at its level index.
- the SDE samplers (pc, ode, heun, ...): over the score of p_t,
  `ScoreModel.score_t(x, t, sde)`, from the SDE's prior.

Trace reuse: the samplers are `tf.function`s keyed on their Python arguments,
so the SDE object and the score callable must stay the same objects from call
to call (a snapshot every few thousand steps would otherwise retrace the whole
chain). `noise.build_sde` is cached on the (frozen, hashable) model config,
`time_score_fn` and `as_score_model` on the score model.
"""

import dataclasses
import functools
import weakref

import tensorflow as tf

from ncsn_tf import config as config_lib
from ncsn_tf import noise
from ncsn_tf.data import toy
from ncsn_tf.models import registry as networks
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.sampling import distributed
from ncsn_tf.sampling import samplers


def validate(config: config_lib.Config) -> config_lib.Config:
  """`config` if every setting is valid and the registries have what it names.

  First the settings (ncsn_tf.config.validate, no TensorFlow needed; it imports
  the --extensions modules), then the network, SDE and sampler registries,
  which hold extensions too. Raises ConfigError with a one-line message naming
  the flag. (ncsn_tf.api.validate and the Python API's pipelines call this.)
  """
  config = config_lib.validate(config)
  networks.check_config(config)
  noise.check_sde_config(config)
  samplers.check_config(config, noise.build_sde(config.model))
  return config


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


@dataclasses.dataclass(frozen=True)
class SeedStream:
  """How a request's seed s and index k become a chain's two stateless seeds.

  The starting points are drawn from [s + start[0], k + start[1]] and the
  chain's noise from [s + chain[0], k + chain[1]] (int32 [2] each).
  """
  start: tuple
  chain: tuple

  def seeds(self, seed, index=0):
    """(start seed, chain seed), int32 [2] tensors, of seed s (int or int32 scalar) and index k."""
    base = tf.stack([tf.cast(seed, tf.int32), tf.cast(index, tf.int32)])
    return base + tf.constant(self.start, tf.int32), base + tf.constant(self.chain, tf.int32)


#: Every way the package seeds a sampler, in one table: the same (seed, index)
#: on the same stream gives the same samples, and different uses of one seed
#: do not share noise. (The offsets are those the package has always used, so
#: samples, served answers and the tests' saved outputs stay the same.)
STREAMS = {
    # --mode=sample, the snapshots and guided sampling: batch k (sampling/draw.py);
    # the toy figures draw as batch 19, inpainting and colourisation as batch 7.
    'samples': SeedStream(start=(0, 0), chain=(0, 1000)),
    # The export's `sample` and `sample_class` (index 0).
    'served': SeedStream(start=(0, 0), chain=(0, 1)),
    # The export's `inpaint` and `colorize` (index 0).
    'served_condition': SeedStream(start=(0, 2), chain=(0, 3)),
    # IS/FID/KID samples of --mode=eval: batch k (evaluation/images.py).
    'eval': SeedStream(start=(2_000_003, 0), chain=(3_000_017, 0)),
    # --likelihood_source=samples: batch k (evaluation/likelihood.py).
    'likelihood': SeedStream(start=(71, 0), chain=(71, 1000)),
}
#: Batch indices of the 'samples' stream used by single-batch draws.
TOY_FIGURE_BATCH = 19
CONDITIONED_BATCH = 7


class ConfiguredSampler:
  """The run's sampler (--sampler and its settings) over one score model.

  Args:
    config: the run's Config (model, data and sampling groups are read).
    score_model: a models.score_model.ScoreModel (the EMA network, usually),
      a model that answers like one (guidance), or a ladder network
      s(x, sigma_index), wrapped with `sigmas`.
    data_shape: the data's shape without the batch axis.
    strategy: None, or a tf.distribute strategy whose local replicas share
      every score evaluation (sampling/distributed.py).
    sigmas: the ladder of a bare ladder network (else the model's own).

  `sample(num, seed, index=0, stream='samples')` -> (samples float32 [num,
  *shape], trajectory float32 [K, num, *shape] or None, nfe int32): the seeds
  come from STREAMS. Only samplers with their own `run_model` (annealed
  Langevin) record a trajectory (num_snapshots states).
  """

  def __init__(self, config: config_lib.Config, score_model, data_shape, strategy=None,
               sigmas=None):
    self.config = config
    model = as_score_model(score_model, getattr(score_model, 'sigmas', None) if sigmas is None
                           else sigmas)
    self.score_model = distributed.shard(model, strategy)
    self.shape = tuple(int(d) for d in data_shape)
    self.name = config.sampling.sampler
    self.spec = samplers.get_sampler(self.name)
    self.sde = noise.build_sde(config.model)
    self.settings = samplers.settings_from(config.sampling)
    if self.spec.needs_sde and (self.sde is None or not model.is_continuous):
      raise ValueError(f'--sampler={self.name} needs a continuous-σ model with --sde')
    if self.spec.run_model is None:
      self._sample = samplers.make_sampler(self.name, self.sde, **self.settings)

  def initial_state(self, num, seed) -> tf.Tensor:
    """Starting points [num, *shape] from stateless `seed` int32 [2]: the SDE's prior, or
    annealed Langevin's uniform noise."""
    if self.spec.start == 'uniform':
      return uniform_initial_state(self.shape, num, seed, self.config.data)
    return self.sde.prior_sample(tf.concat([[num], tf.constant(self.shape, tf.int32)], 0), seed)

  def run(self, x_init, chain_seed, num_snapshots: int = 0, condition=None, callback=None):
    """The chain from x_init: (samples, trajectory or None, nfe int32 tensor).

    condition: None, or a sampling.conditions.Condition (inpainting,
    colourisation) of x_init's shape, which every sampler accepts.
    callback: None, or fn(step, num_steps, x) called on the host after every
    step of samplers that have steps (sampling/callbacks.py).
    """
    if self.spec.run_model is not None:
      return self.spec.run_model(self.score_model, self.sde, x_init, chain_seed, condition,
                                 num_snapshots, callback, **self.settings)
    samples, nfe = self._sample(time_score_fn(self.score_model, self.sde), x_init, chain_seed,
                                condition=condition, callback=callback)
    return samples, None, nfe

  def sample(self, num, seed, index=0, *, stream: str = 'samples', num_snapshots: int = 0,
             condition=None, callback=None):
    """`num` samples from seed (int or int32 scalar) and index k on `stream` (STREAMS)."""
    start_seed, chain_seed = STREAMS[stream].seeds(seed, index)
    x_init = self.initial_state(num, start_seed)
    return self.run(x_init, chain_seed, num_snapshots, condition=condition, callback=callback)


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
