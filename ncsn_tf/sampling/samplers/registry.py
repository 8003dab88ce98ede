"""The sampler registry: a sampler is one module that registers one `SamplerSpec`.

A spec says everything the package needs to run a sampler by name (--sampler,
the export, `ncsn_tf.load(...).sample(sampler=...)`):

* `sample(score_fn, sde, x_init, seed, condition=None, callback=None, **settings)
  -> (samples, nfe)`: the sampler itself, over score_fn(x [N, ...], t float32 [N])
  the score of p_t, from prior draws x_init, with an int32 [2] stateless seed,
  an optional sampling.conditions.Condition (inpainting, colourisation) and an
  optional callback(step, num_steps, x) that its loop calls after every step
  through sampling/callbacks.py `step_hook` (progress, trajectories); its
  settings are its keyword-only parameters, with defaults.
* `check(sde, **settings)`: raises a one-line ValueError (a `SettingError`
  naming the parameter) on a bad setting, without doing any work.
* `settings`: parameter -> the Config setting (sampling group) it is read
  from, in the order `describe` prints them, e.g. {'num_steps': 'sampling_steps'}.
  A new sampler reuses the existing settings or adds its own field to
  ncsn_tf/config/schema.py's SamplingConfig.
* `needs_sde` (the SDE samplers; annealed Langevin runs on a ladder network
  too), `start` ('prior': sde.prior_sample; 'uniform': annealed Langevin's
  uniform noise) and, for samplers that run a ScoreModel differently from
  `sample` (annealed Langevin asks a ladder network at its level indices and
  keeps a trajectory), `run_model`.

The builtin samplers register from ncsn_tf/sampling/samplers/, whose package
imports them all; use the registry through that package
(`from ncsn_tf.sampling import samplers; samplers.make_sampler('pc', sde, ...)`).

    sampler = samplers.make_sampler('pc', VESDE(0.01, 50), predictor='reverse_diffusion',
                                    corrector='langevin', snr=0.16, num_steps=1000)
    samples, nfe = sampler(score_fn, x_init, seed)
"""

import dataclasses
import inspect
from typing import Callable
from typing import Mapping

from ncsn_tf import config as config_lib

#: How a sampler's chain starts: the SDE's prior, or annealed Langevin's uniform noise.
STARTS = ('prior', 'uniform')


class SettingError(ValueError):
  """A bad sampler setting: `setting` is the parameter's name; the message is one line."""

  def __init__(self, setting: str, message: str, label: str | None = None):
    super().__init__(f'{label or setting} {message}')
    self.setting = setting
    self.message = message


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """One sampler, everything about it in one place (see the module docstring)."""
  name: str
  sample: Callable
  check: Callable
  settings: Mapping[str, str]
  doc: str
  needs_sde: bool = True
  start: str = 'prior'
  run_model: Callable | None = None

  def keywords(self) -> dict:
    """{parameter: default} of the keyword-only parameters of `sample`."""
    parameters = inspect.signature(self.sample).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


_SAMPLERS: dict[str, SamplerSpec] = {}


def register(spec: SamplerSpec) -> SamplerSpec:
  """Adds a sampler under `spec.name` (new names only); returns the spec.

  Checks that every setting is a keyword of `sample` and a SamplingConfig
  field, so a typo fails here, at import, not in a run.
  """
  if spec.name in _SAMPLERS:
    raise ValueError(f'a sampler named {spec.name!r} is already registered')
  if spec.start not in STARTS:
    raise ValueError(f'sampler {spec.name!r}: start must be one of {STARTS}, got {spec.start!r}')
  fields = {f.name for f in dataclasses.fields(config_lib.SamplingConfig)}
  keywords = spec.keywords()
  for parameter, field in spec.settings.items():
    if parameter not in keywords:
      raise ValueError(f'sampler {spec.name!r}: setting {parameter!r} is not a keyword-only '
                       f'parameter of its sample function')
    if field not in fields:
      raise ValueError(f'sampler {spec.name!r}: {parameter!r} reads --{field}, which is not a '
                       f'setting of ncsn_tf/config/schema.py SamplingConfig')
  _SAMPLERS[spec.name] = spec
  return spec


def names() -> tuple:
  """The registered samplers' names, in registration order."""
  return tuple(_SAMPLERS)


def get_sampler(name: str) -> SamplerSpec:
  if name not in _SAMPLERS:
    raise ValueError(f'unknown sampler {name!r}; choose from {sorted(_SAMPLERS)}')
  return _SAMPLERS[name]


def resolve_settings(name: str, sde, **settings) -> dict:
  """`settings` with the sampler's defaults filled in, checked; ValueError if any is bad."""
  spec = get_sampler(name)
  keywords = spec.keywords()
  unknown = sorted(set(settings) - set(keywords))
  if unknown:
    raise ValueError(f'unknown settings {unknown} for sampler {name!r}; '
                     f'it takes {sorted(keywords)}')
  resolved = {k: settings.get(k, default) for k, default in keywords.items()}
  spec.check(sde, **resolved)
  return resolved


def make_sampler(name: str, sde, **settings) -> Callable:
  """fn(score_fn, x_init, seed, condition=None, callback=None) -> (samples, nfe) for
  sampler `name`, its settings checked now."""
  resolved = resolve_settings(name, sde, **settings)
  sample = get_sampler(name).sample

  def sampler(score_fn, x_init, seed, condition=None, callback=None):
    return sample(score_fn, sde, x_init, seed, condition, callback, **resolved)

  return sampler


# --- the Config side ------------------------------------------------------------

def settings_from(sampling: config_lib.SamplingConfig, name: str | None = None) -> dict:
  """{parameter: value} of sampler `name` (default --sampler) read from the sampling config."""
  spec = get_sampler(name or sampling.sampler)
  return {parameter: getattr(sampling, field) for parameter, field in spec.settings.items()}


def describe(sampling: config_lib.SamplingConfig) -> str:
  """'ode(rtol=1e-05, atol=1e-05, ...)': the sampler's name and settings, for logs and exports."""
  settings = ', '.join(f'{k}={v}' for k, v in settings_from(sampling).items())
  return f'{sampling.sampler}({settings})'


def check_config(config: config_lib.Config, sde) -> None:
  """--sampler names a registered sampler that this run can use, with good settings.

  `sde` is the run's noise process (None for a ladder network). Raises
  ConfigError naming the flag, as config validation does.
  """
  s = config.sampling
  if s.sampler not in _SAMPLERS:
    raise config_lib.ConfigError(f'--sampler: must be one of {", ".join(_SAMPLERS)}, '
                                 f'got {s.sampler!r}')
  spec = _SAMPLERS[s.sampler]
  if spec.needs_sde and sde is None:
    raise config_lib.ConfigError(
        f'--sampler: {s.sampler} needs a continuous-σ model (--sde and '
        '--noise_embedding=fourier); a ladder network answers only its own levels: '
        'use --sampler=ald')
  if spec.run_model is not None:
    return  # Runs on the model's own ladder: its settings are checked with the Config's.
  try:
    spec.check(sde, **{**spec.keywords(), **settings_from(s)})
  except SettingError as e:
    flag = spec.settings.get(e.setting, e.setting)
    raise config_lib.ConfigError(f'--{flag}: {e.message}') from None
  except ValueError as e:
    raise config_lib.ConfigError(f'--sampler: {s.sampler}: {e}') from None
