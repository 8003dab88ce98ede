"""The network registry: each score network registers how it is built from a Config.

`build_model(config, data_shape)` builds --model's network;
(models/classifier.py builds the noise-conditional classifier of classifier
guidance). A network module (mlp.py, refinenet.py,
unet.py) ends with `register(NetworkSpec(...))`; ncsn_tf/models/__init__.py
imports them all, so any import from ncsn_tf.models sees every builtin.

A spec says what data the network takes ('flat' 2-D toy points or 'image'
[H, W, C]) and whether it takes σ itself (--noise_embedding=fourier, any
σ > 0) besides the ladder's level index; `check_config` refuses a --model that
cannot serve the run before any work.
"""

import dataclasses
from typing import Callable

import keras

from ncsn_tf import catalog
from ncsn_tf import config as config_lib

#: What a network takes: flat vectors (the 2-D toys) or images [H, W, C].
DATA_KINDS = ('flat', 'image')


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  """One score network.

  name: the --model value.
  build: fn(config, data_shape) -> a built keras.Model s(x, sigma_index), or
    s(x, sigma) with sigma float32 [N] for --noise_embedding=fourier (and
    `labels=` for --class_conditional); output shaped like x.
  data: 'flat' or 'image' (DATA_KINDS).
  continuous: whether it can take σ itself (--noise_embedding=fourier).
  doc: one line for docs and errors.
  """
  name: str
  build: Callable
  data: str
  continuous: bool
  doc: str


_NETWORKS: dict[str, NetworkSpec] = {}


def register(spec: NetworkSpec) -> NetworkSpec:
  if spec.name in _NETWORKS:
    raise ValueError(f'a network named {spec.name!r} is already registered')
  if spec.data not in DATA_KINDS:
    raise ValueError(f'network {spec.name!r}: data must be one of {DATA_KINDS}, got {spec.data!r}')
  _NETWORKS[spec.name] = spec
  return spec


def names() -> tuple:
  return tuple(_NETWORKS)


def get(name: str) -> NetworkSpec:
  if name not in _NETWORKS:
    raise ValueError(f'unknown model {name!r}; registered: {", ".join(_NETWORKS)}')
  return _NETWORKS[name]


def label_count(config: config_lib.Config) -> int:
  """The dataset's number of classes (ncsn_tf/catalog.py; 0 = unlabelled)."""
  return catalog.get(config.data.dataset).num_classes


def build_model(config: config_lib.Config, data_shape: tuple) -> keras.Model:
  """The built score network of --model (see NetworkSpec.build)."""
  return get(config.model.name).build(config, tuple(data_shape))


def _names_for(kind: str, continuous: bool = False) -> list:
  return [n for n, s in _NETWORKS.items() if s.data == kind and (s.continuous or not continuous)]


def check_config(config: config_lib.Config) -> None:
  """--model is a registered network that takes this run's data and noise; else ConfigError."""
  m = config.model
  if m.name not in _NETWORKS:
    raise config_lib.ConfigError(f'--model: must be one of {", ".join(_NETWORKS)}, got {m.name!r}')
  spec = _NETWORKS[m.name]
  kind = 'flat' if config.data.is_toy else 'image'
  if spec.data != kind:
    raise config_lib.ConfigError(
        f'--model: {"toy" if kind == "flat" else "image"} datasets use '
        f'--model={" or ".join(_names_for(kind))}, got {m.name!r}')
  if m.noise_embedding == 'fourier' and not spec.continuous:
    raise config_lib.ConfigError(
        f'--noise_embedding: fourier applies to --model='
        f'{" or ".join(n for n, s in _NETWORKS.items() if s.continuous)}, got {m.name!r}')
