"""The run configuration: frozen dataclasses grouped by concern, and validation.

`Config` is the only thing library code receives (never absl FLAGS). Every
invalid value raises `ConfigError` whose message names the command-line flag
and what is allowed, so `run.py` can print it as one line and exit nonzero
before any work is done.
"""

import dataclasses
import json
import os

TOY_DATASETS = ('gmm', 'banana')
IMAGE_DATASETS = ('mnist', 'cifar10', 'celeba', 'folder', 'shapes')
MODES = ('train', 'sample', 'eval', 'export')
MODELS = ('mlp', 'refinenet')
LOSSES = ('anneal_dsm',)


class ConfigError(ValueError):
  """An invalid configuration value; the message starts with the flag name."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
  dataset: str = 'gmm'              # --dataset
  data_dir: str | None = None       # --data_dir: passed to tfds
  data_path: str | None = None      # --data_path: image folder for --dataset=folder
  image_size: int = 32              # --image_size
  random_flip: bool = True          # --random_flip
  logit_transform: bool = False     # --logit_transform

  @property
  def is_toy(self) -> bool:
    return self.dataset in TOY_DATASETS


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  name: str = 'mlp'                 # --model
  sigma_begin: float = 20.0         # --sigma_begin (σ_1)
  sigma_end: float = 1.0            # --sigma_end (σ_L)
  num_scales: int = 10              # --num_scales (L)
  ngf: int = 128                    # --ngf: RefineNet width, or MLP hidden units
  num_layers: int = 3               # --num_layers: MLP hidden layers
  scale_by_sigma: bool = True       # --scale_by_sigma: MLP output divided by σ_i


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  loss: str = 'anneal_dsm'          # --loss
  batch_size: int = 128             # --batch_size (global, over all replicas)
  learning_rate: float = 1e-3       # --learning_rate (Adam)
  beta1: float = 0.9                # --beta1 (Adam)
  train_steps: int = 5000           # --train_steps
  snapshot_freq: int = 1000         # --snapshot_freq: checkpoint and sample every N steps
  log_freq: int = 100               # --log_freq: scalars every N steps
  ema_rate: float = 0.0             # --ema_rate: 0 disables the EMA of weights
  num_cpu_replicas: int = 0         # --num_cpu_replicas: split the CPU into N logical devices
  max_checkpoints: int = 5          # --max_checkpoints


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  n_steps_each: int = 100           # --n_steps_each (T)
  step_lr: float = 0.05             # --step_lr (ε; update x + ε_i s + sqrt(2 ε_i) z)
  num_samples: int = 1280           # --num_samples
  sample_batch_size: int = 1280     # --sample_batch_size
  denoise: bool = False             # --denoise: final noise-free step
  num_snapshots: int = 10           # --num_snapshots: chain states kept for strips/GIFs


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  export_dir: str = ''              # --export_dir


@dataclasses.dataclass(frozen=True)
class Config:
  name: str = 'default'
  workdir: str = ''
  mode: str = 'train'
  seed: int = 0
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()
  sampling: SamplingConfig = SamplingConfig()
  export: ExportConfig = ExportConfig()

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict) -> 'Config':
    groups = {'data': DataConfig, 'model': ModelConfig, 'train': TrainConfig,
              'sampling': SamplingConfig, 'export': ExportConfig}
    kwargs = {k: (groups[k](**v) if k in groups else v) for k, v in d.items()}
    return cls(**kwargs)

  def replace(self, **groups) -> 'Config':
    """A copy with some groups' fields replaced: replace(train={'batch_size': 8})."""
    updates = {}
    for key, value in groups.items():
      current = getattr(self, key)
      updates[key] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
    return dataclasses.replace(self, **updates)


def _require(condition: bool, flag: str, message: str):
  if not condition:
    raise ConfigError(f'--{flag}: {message}')


def validate(config: Config) -> Config:
  """Checks every field; returns `config` or raises ConfigError naming the flag."""
  _require(config.mode in MODES, 'mode', f'must be one of {", ".join(MODES)}, got {config.mode!r}')
  _require(bool(config.workdir), 'workdir', 'must not be empty')
  _require(config.seed >= 0, 'seed', f'must be >= 0, got {config.seed}')
  _validate_data(config.data)
  _validate_model(config.model, config.data)
  _validate_train(config.train)
  _validate_sampling(config.sampling)
  _require(bool(config.export.export_dir), 'export_dir', 'must not be empty')
  return config


def _validate_data(data: DataConfig):
  known = TOY_DATASETS + IMAGE_DATASETS
  _require(data.dataset in known, 'dataset', f'must be one of {", ".join(known)}, got {data.dataset!r}')
  if data.dataset == 'folder':
    _require(bool(data.data_path), 'data_path', 'is required with --dataset=folder')
    _require(os.path.isdir(data.data_path), 'data_path', f'{data.data_path!r} is not a directory')
  if not data.is_toy:
    _require(data.image_size >= 16 and data.image_size % 4 == 0, 'image_size',
             f'must be a multiple of 4 and >= 16, got {data.image_size}')


def _validate_model(model: ModelConfig, data: DataConfig):
  _require(model.name in MODELS, 'model', f'must be one of {", ".join(MODELS)}, got {model.name!r}')
  if data.is_toy:
    _require(model.name == 'mlp', 'model', f'toy datasets use --model=mlp, got {model.name!r}')
  else:
    _require(model.name == 'refinenet', 'model', f'image datasets use --model=refinenet, got {model.name!r}')
  _require(model.sigma_end > 0, 'sigma_end', f'must be > 0, got {model.sigma_end}')
  _require(model.num_scales >= 1, 'num_scales', f'must be >= 1, got {model.num_scales}')
  if model.num_scales > 1:
    _require(model.sigma_begin > model.sigma_end, 'sigma_begin',
             f'must be > --sigma_end ({model.sigma_end}), got {model.sigma_begin}')
  _require(model.ngf >= 1, 'ngf', f'must be >= 1, got {model.ngf}')
  _require(model.num_layers >= 1, 'num_layers', f'must be >= 1, got {model.num_layers}')


def _validate_train(train: TrainConfig):
  _require(train.loss in LOSSES, 'loss', f'must be one of {", ".join(LOSSES)}, got {train.loss!r}')
  _require(train.batch_size >= 1, 'batch_size', f'must be >= 1, got {train.batch_size}')
  _require(train.learning_rate > 0, 'learning_rate', f'must be > 0, got {train.learning_rate}')
  _require(0 <= train.beta1 < 1, 'beta1', f'must be in [0, 1), got {train.beta1}')
  _require(train.train_steps >= 0, 'train_steps', f'must be >= 0, got {train.train_steps}')
  _require(train.snapshot_freq >= 1, 'snapshot_freq', f'must be >= 1, got {train.snapshot_freq}')
  _require(train.log_freq >= 1, 'log_freq', f'must be >= 1, got {train.log_freq}')
  _require(0 <= train.ema_rate < 1, 'ema_rate', f'must be in [0, 1), got {train.ema_rate}')
  _require(train.num_cpu_replicas >= 0, 'num_cpu_replicas',
           f'must be >= 0, got {train.num_cpu_replicas}')
  if train.num_cpu_replicas > 1:
    _require(train.batch_size % train.num_cpu_replicas == 0, 'batch_size',
             f'({train.batch_size}) must be divisible by --num_cpu_replicas ({train.num_cpu_replicas})')
  _require(train.max_checkpoints >= 1, 'max_checkpoints', f'must be >= 1, got {train.max_checkpoints}')


def _validate_sampling(sampling: SamplingConfig):
  _require(sampling.n_steps_each >= 1, 'n_steps_each', f'must be >= 1, got {sampling.n_steps_each}')
  _require(sampling.step_lr > 0, 'step_lr', f'must be > 0, got {sampling.step_lr}')
  _require(sampling.num_samples >= 1, 'num_samples', f'must be >= 1, got {sampling.num_samples}')
  _require(sampling.sample_batch_size >= 1, 'sample_batch_size',
           f'must be >= 1, got {sampling.sample_batch_size}')
  _require(sampling.num_snapshots >= 1, 'num_snapshots', f'must be >= 1, got {sampling.num_snapshots}')
