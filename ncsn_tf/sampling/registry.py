"""TODO docstring (from ncsn_tf.sampling.registry)."""

import dataclasses
import inspect
from typing import Callable

from ncsn_tf.sampling.samplers import ald
from ncsn_tf.sampling.samplers import heun
from ncsn_tf.sampling.samplers import ode
from ncsn_tf.sampling.samplers import pc


@dataclasses.dataclass(frozen=True)
class Sampler:
  """A registry entry: the sampling function and its settings check."""
  sample: Callable
  check: Callable


SAMPLERS = {
    'pc': Sampler(pc.pc_sample, pc.check_settings),
    'ode': Sampler(ode.ode_sample, ode.check_settings),
    'heun': Sampler(heun.heun_sample, heun.check_settings),
    'ald': Sampler(ald.ald_sample, ald.check_ald),
}


PREDICTORS = {name: fn for name, (fn, _) in pc.PREDICTORS.items()}


CORRECTORS = dict(pc.CORRECTORS)


def _lookup(table, kind, name):
  if name not in table:
    raise ValueError(f'unknown {kind} {name!r}; choose from {sorted(table)}')
  return table[name]


def get_sampler(name: str) -> Sampler:
  return _lookup(SAMPLERS, 'sampler', name)


def get_predictor(name: str) -> Callable:
  return _lookup(PREDICTORS, 'predictor', name)


def get_corrector(name: str) -> Callable:
  return _lookup(CORRECTORS, 'corrector', name)


def resolve_settings(name: str, sde, **settings) -> dict:
  """`settings` with the sampler's defaults filled in, checked; ValueError if any is bad."""
  entry = get_sampler(name)
  parameters = inspect.signature(entry.sample).parameters
  keywords = [p for p in parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
  unknown = sorted(set(settings) - {p.name for p in keywords})
  if unknown:
    raise ValueError(f'unknown settings {unknown} for sampler {name!r}; '
                     f'it takes {sorted(p.name for p in keywords)}')
  resolved = {p.name: settings.get(p.name, p.default) for p in keywords}
  entry.check(sde, **resolved)
  return resolved


def make_sampler(name: str, sde, **settings) -> Callable:
  """fn(score_fn, x_init, seed, condition=None) -> (samples, nfe) for sampler `name`, checked now."""
  resolved = resolve_settings(name, sde, **settings)
  sample = get_sampler(name).sample
  return lambda score_fn, x_init, seed, condition=None: sample(score_fn, sde, x_init, seed,
                                                               condition, **resolved)
