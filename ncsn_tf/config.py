"""The run configuration: frozen dataclasses grouped by concern, and validation.

`Config` is the only thing library code receives (never absl FLAGS). Every
invalid value raises `ConfigError` whose message names the command-line flag
and what is allowed, so `run.py` can print it as one line and exit nonzero
before any work is done.
"""

import dataclasses
import json
import os

TOY_DATASETS = ('gmm', 'banana', 'rings', 'grid', 'gmm8')
IMAGE_DATASETS = ('mnist', 'cifar10', 'celeba', 'folder', 'shapes')
MODES = ('train', 'sample', 'eval', 'export', 'experiment', 'inpaint', 'stats')
#: --inception_kind values: the network whose features FID/IS/KID use (ncsn_tf/evaluation.py).
INCEPTION_KINDS = ('fid_graph', 'keras', 'tiny_random')
MODELS = ('mlp', 'refinenet', 'unet')
# Score networks for images: the paper's RefineNet, or a small U-Net (models/unet.py).
IMAGE_MODELS = ('refinenet', 'unet')
# The U-Net halves the resolution three times (32 -> 4).
UNET_SIZE_MULTIPLE = 8
LOSSES = ('anneal_dsm', 'esm', 'ism', 'dsm', 'ssm', 'ssm_vr', 'anneal_ssm')
PROJECTIONS = ('gaussian', 'rademacher')
#: --experiment values of --mode=experiment (see ncsn_tf/experiments.py).
EXPERIMENTS = ('all', 'objectives', 'trajectories', 'samplers', 'weights')
PRECISIONS = ('auto', 'float32', 'mixed_bfloat16', 'mixed_float16')
#: --strategy values: auto (GPUs or --num_cpu_replicas, else one device),
#: mirrored (MirroredStrategy on this machine), multi_worker (TF_CONFIG).
STRATEGIES = ('auto', 'mirrored', 'multi_worker')
#: --lr_schedule values (ncsn_tf/lr_schedule.py).
LR_SCHEDULES = ('constant', 'cosine')
#: --level_sampling values: how training draws each example's noise level.
LEVEL_SAMPLINGS = ('uniform', 'lognormal')
#: --preconditioning values: how the image network's output becomes the score.
PRECONDITIONINGS = ('none', 'edm')
#: --unet_norm values (models/unet.py NORMS): GroupNorm, or none with a unit-scale input.
UNET_NORMS = ('group', 'none')


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
  ngf: int = 128                    # --ngf: RefineNet / U-Net base width, or MLP hidden units
  num_layers: int = 3               # --num_layers: MLP hidden layers
  scale_by_sigma: bool = True       # --scale_by_sigma: score output divided by σ_i
  conditional_norm: bool = True     # --conditional_norm: per-level CIN++ rows (RefineNet)
  preconditioning: str = 'none'     # --preconditioning: none | edm (RefineNet, U-Net; Karras et al. 2022)
  sigma_data: float = 0.25          # --sigma_data: data std for edm, in the data's units
  unet_norm: str = 'group'          # --unet_norm: group | none (U-Net normalisation)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  loss: str = 'anneal_dsm'          # --loss
  batch_size: int = 128             # --batch_size (global, over all replicas)
  learning_rate: float = 1e-3       # --learning_rate (Adam)
  beta1: float = 0.9                # --beta1 (Adam)
  lr_schedule: str = 'constant'     # --lr_schedule: constant | cosine (to 0 at --train_steps)
  warmup_steps: int = 0             # --warmup_steps: linear ramp 0 -> learning_rate
  level_sampling: str = 'uniform'   # --level_sampling: uniform (the paper) | lognormal (EDM)
  level_log_mean: float = -1.2      # --level_log_mean: lognormal: mean of log σ
  level_log_std: float = 1.2        # --level_log_std: lognormal: std of log σ
  train_steps: int = 5000           # --train_steps
  train_minutes: float = 0.0        # --train_minutes: stop once training has taken this long in all (0: no limit)
  snapshot_freq: int = 1000         # --snapshot_freq: checkpoint and sample every N steps
  log_freq: int = 100               # --log_freq: scalars every N steps
  ema_rate: float = 0.0             # --ema_rate: 0 disables the EMA of weights
  num_cpu_replicas: int = 0         # --num_cpu_replicas: split the CPU into N logical devices
  max_checkpoints: int = 5          # --max_checkpoints
  heldout_batches: int = 4          # --heldout_batches: held-out DSM loss batches per snapshot
  precision: str = 'auto'           # --precision: auto picks the fastest measured per device
  jit_compile: bool = False         # --jit_compile: XLA-compile the per-replica step
  num_projections: int = 1          # --num_projections: slicing vectors per example (SSM)
  projection: str = 'gaussian'      # --projection: gaussian or rademacher slicing vectors
  strategy: str = 'auto'            # --strategy: auto | mirrored | multi_worker (TF_CONFIG)
  skip_nonfinite: bool = False      # --skip_nonfinite: skip (and count) non-finite steps
  deterministic: bool = False       # --deterministic: TF op determinism (bitwise resumes)
  max_chunk_steps: int = 100        # --max_chunk_steps: steps per tf.function call (preemption latency)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  n_steps_each: int = 100           # --n_steps_each (T)
  step_lr: float = 0.05             # --step_lr (ε; update x + ε_i s + sqrt(2 ε_i) z)
  num_samples: int = 1280           # --num_samples
  sample_batch_size: int = 1280     # --sample_batch_size
  denoise: bool = False             # --denoise: final noise-free step
  num_snapshots: int = 10           # --num_snapshots: chain states kept for strips/GIFs
  summary_samples: int = 16         # --summary_samples: image samples logged at each snapshot
  inpaint_mask: str = 'right'       # --inpaint_mask: right|left|top|bottom|center|random|PATH.png
  num_inpaint_images: int = 8       # --num_inpaint_images: test images to complete
  inpaint_completions: int = 4      # --inpaint_completions: completions per image


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  export_dir: str = ''              # --export_dir


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  num_samples: int = 50_000         # --eval_samples: samples for IS/FID/KID (0: held-out loss only)
  batch_size: int = 500             # --eval_batch_size: images per sampler call and Inception batch
  checkpoints: str = 'latest'       # --eval_checkpoints: latest | all | STEP,STEP,...
  inception_kind: str = 'fid_graph'  # --inception_kind: fid_graph | keras | tiny_random
  inception_path: str = ''          # --inception_path: classify_image_graph_def.pb or keras weights
  reference_stats: str = ''         # --reference_stats: .npz (mu, sigma); default cached in workdir
  reference_split: str = 'train'    # --reference_split: dataset split for computed statistics
  reference_images: int = 0         # --reference_images: images for computed statistics (0: all)


@dataclasses.dataclass(frozen=True)
class Config:
  name: str = 'default'
  workdir: str = ''
  mode: str = 'train'
  seed: int = 0
  experiment: str = 'all'           # --experiment: which lab figure/table --mode=experiment makes
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()
  sampling: SamplingConfig = SamplingConfig()
  export: ExportConfig = ExportConfig()
  eval: EvalConfig = EvalConfig()

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict) -> 'Config':
    groups = {'data': DataConfig, 'model': ModelConfig, 'train': TrainConfig,
              'sampling': SamplingConfig, 'export': ExportConfig,
              'eval': EvalConfig}
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
  _require(config.experiment in EXPERIMENTS, 'experiment',
           f'must be one of {", ".join(EXPERIMENTS)}, got {config.experiment!r}')
  if config.mode == 'inpaint':
    _require(not config.data.is_toy, 'mode', 'inpaint needs an image --dataset')
  if config.mode == 'experiment':
    _require(config.data.is_toy, 'mode', 'experiment needs a toy --dataset (exact scores)')
  if config.train.loss == 'esm':
    _require(config.data.is_toy, 'loss', 'esm needs the exact score: toy datasets only')
  _validate_data(config.data)
  _validate_model(config.model, config.data)
  _validate_train(config.train)
  _validate_sampling(config.sampling)
  _validate_eval(config)
  _require(bool(config.export.export_dir), 'export_dir', 'must not be empty')
  _require_writable_dir(config.workdir, 'workdir')
  _require_writable_dir(config.export.export_dir, 'export_dir')
  return config


def _require_writable_dir(path: str, flag: str):
  """`path` is a writable directory, or can be created under a writable one."""
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if existing == os.path.abspath(path):
    _require(os.path.isdir(path), flag, f'{path!r} exists and is not a directory')
    _require(os.access(path, os.W_OK | os.X_OK), flag,
             f'{path!r} is not writable; choose another --{flag} or fix its permissions')
  else:
    _require(os.path.isdir(existing), flag,
             f'cannot create {path!r}: {existing!r} is a file, not a directory')
    _require(os.access(existing, os.W_OK | os.X_OK), flag,
             f'cannot create {path!r}: {existing!r} is not writable')


def tf_config_cluster() -> dict | None:
  """The parsed TF_CONFIG environment variable, or None when it is unset."""
  raw = os.environ.get('TF_CONFIG')
  if not raw:
    return None
  try:
    parsed = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ConfigError(f'--strategy: TF_CONFIG is not valid JSON ({e})') from None
  _require(isinstance(parsed, dict) and isinstance(parsed.get('cluster'), dict)
           and isinstance(parsed.get('task'), dict), 'strategy',
           'TF_CONFIG must be {"cluster": {...}, "task": {"type": ..., "index": ...}}')
  return parsed


def num_workers(train: 'TrainConfig') -> int:
  """Workers (chief included) of a multi_worker run; 1 otherwise."""
  if train.strategy != 'multi_worker':
    return 1
  cluster = tf_config_cluster() or {'cluster': {}}
  return sum(len(cluster['cluster'].get(kind, [])) for kind in ('chief', 'worker')) or 1


def _validate_data(data: DataConfig):
  known = TOY_DATASETS + IMAGE_DATASETS
  _require(data.dataset in known, 'dataset', f'must be one of {", ".join(known)}, got {data.dataset!r}')
  if data.dataset == 'folder':
    _require(bool(data.data_path), 'data_path', 'is required with --dataset=folder')
    _require(os.path.isdir(data.data_path), 'data_path', f'{data.data_path!r} is not a directory')
    _require(os.access(data.data_path, os.R_OK | os.X_OK), 'data_path',
             f'{data.data_path!r} is not readable; fix its permissions')
  if not data.is_toy:
    _require(data.image_size >= 16 and data.image_size % 4 == 0, 'image_size',
             f'must be a multiple of 4 and >= 16, got {data.image_size}')


def _validate_model(model: ModelConfig, data: DataConfig):
  _require(model.name in MODELS, 'model', f'must be one of {", ".join(MODELS)}, got {model.name!r}')
  if data.is_toy:
    _require(model.name == 'mlp', 'model', f'toy datasets use --model=mlp, got {model.name!r}')
  else:
    _require(model.name in IMAGE_MODELS, 'model',
             f'image datasets use --model=refinenet or unet, got {model.name!r}')
    if model.name == 'unet':
      _require(data.image_size % UNET_SIZE_MULTIPLE == 0, 'image_size',
               f'--model=unet needs a multiple of {UNET_SIZE_MULTIPLE}, got {data.image_size}')
  _require(model.sigma_end > 0, 'sigma_end', f'must be > 0, got {model.sigma_end}')
  _require(model.num_scales >= 1, 'num_scales', f'must be >= 1, got {model.num_scales}')
  if model.num_scales > 1:
    _require(model.sigma_begin > model.sigma_end, 'sigma_begin',
             f'must be > --sigma_end ({model.sigma_end}), got {model.sigma_begin}')
  _require(model.ngf >= 1, 'ngf', f'must be >= 1, got {model.ngf}')
  _require(model.num_layers >= 1, 'num_layers', f'must be >= 1, got {model.num_layers}')
  if not model.conditional_norm:
    _require(model.name == 'refinenet', 'conditional_norm',
             f'false applies to --model=refinenet only, got {model.name!r}')
    _require(model.scale_by_sigma or model.preconditioning == 'edm', 'conditional_norm',
             'false needs --scale_by_sigma or --preconditioning=edm: with shared '
             'normalizers only the output scaling tells the noise levels apart')
  # Checked for every model, used by the U-Net only (as --ngf is shared), so a
  # flagfile that sets it can be rerun with --model=refinenet.
  _require(model.unet_norm in UNET_NORMS, 'unet_norm',
           f'must be one of {", ".join(UNET_NORMS)}, got {model.unet_norm!r}')
  _require(model.preconditioning in PRECONDITIONINGS, 'preconditioning',
           f'must be one of {", ".join(PRECONDITIONINGS)}, got {model.preconditioning!r}')
  if model.preconditioning == 'edm':
    _require(model.name in IMAGE_MODELS, 'preconditioning',
             f'edm applies to --model={" or ".join(IMAGE_MODELS)}, got {model.name!r}')
    _require(not model.scale_by_sigma, 'preconditioning',
             'edm scales the output itself; pass --scale_by_sigma=false with it')
    _require(model.sigma_data > 0, 'sigma_data', f'must be > 0, got {model.sigma_data}')


def _validate_train(train: TrainConfig):
  _require(train.loss in LOSSES, 'loss', f'must be one of {", ".join(LOSSES)}, got {train.loss!r}')
  _require(train.batch_size >= 1, 'batch_size', f'must be >= 1, got {train.batch_size}')
  _require(train.num_projections >= 1, 'num_projections', f'must be >= 1, got {train.num_projections}')
  _require(train.projection in PROJECTIONS, 'projection',
           f'must be one of {", ".join(PROJECTIONS)}, got {train.projection!r}')
  _require(train.learning_rate > 0, 'learning_rate', f'must be > 0, got {train.learning_rate}')
  _require(0 <= train.beta1 < 1, 'beta1', f'must be in [0, 1), got {train.beta1}')
  _require(train.lr_schedule in LR_SCHEDULES, 'lr_schedule',
           f'must be one of {", ".join(LR_SCHEDULES)}, got {train.lr_schedule!r}')
  _require(train.warmup_steps >= 0, 'warmup_steps', f'must be >= 0, got {train.warmup_steps}')
  _require(train.level_sampling in LEVEL_SAMPLINGS, 'level_sampling',
           f'must be one of {", ".join(LEVEL_SAMPLINGS)}, got {train.level_sampling!r}')
  _require(train.level_log_std > 0, 'level_log_std', f'must be > 0, got {train.level_log_std}')
  _require(train.train_steps >= 0, 'train_steps', f'must be >= 0, got {train.train_steps}')
  _require(train.train_minutes >= 0, 'train_minutes', f'must be >= 0, got {train.train_minutes}')
  _require(train.snapshot_freq >= 1, 'snapshot_freq', f'must be >= 1, got {train.snapshot_freq}')
  _require(train.log_freq >= 1, 'log_freq', f'must be >= 1, got {train.log_freq}')
  _require(0 <= train.ema_rate < 1, 'ema_rate', f'must be in [0, 1), got {train.ema_rate}')
  _require(train.num_cpu_replicas >= 0, 'num_cpu_replicas',
           f'must be >= 0, got {train.num_cpu_replicas}')
  if train.num_cpu_replicas > 1:
    _require(train.batch_size % train.num_cpu_replicas == 0, 'batch_size',
             f'({train.batch_size}) must be divisible by --num_cpu_replicas ({train.num_cpu_replicas})')
  _require(train.precision in PRECISIONS, 'precision',
           f'must be one of {", ".join(PRECISIONS)}, got {train.precision!r}')
  _require(train.heldout_batches >= 0, 'heldout_batches',
           f'must be >= 0, got {train.heldout_batches}')
  _require(train.max_checkpoints >= 1, 'max_checkpoints', f'must be >= 1, got {train.max_checkpoints}')
  _require(train.strategy in STRATEGIES, 'strategy',
           f'must be one of {", ".join(STRATEGIES)}, got {train.strategy!r}')
  _require(train.max_chunk_steps >= 1, 'max_chunk_steps', f'must be >= 1, got {train.max_chunk_steps}')
  if train.strategy == 'multi_worker':
    _require(tf_config_cluster() is not None, 'strategy',
             'multi_worker needs the TF_CONFIG environment variable (cluster and task); '
             'see docs/operating.md')
    _require(train.num_cpu_replicas <= 1, 'num_cpu_replicas',
             'is for one machine; with --strategy=multi_worker use one CPU per worker')
    workers = num_workers(train)
    _require(train.batch_size % workers == 0, 'batch_size',
             f'({train.batch_size}) must be divisible by the number of workers ({workers})')


def _validate_sampling(sampling: SamplingConfig):
  _require(sampling.n_steps_each >= 1, 'n_steps_each', f'must be >= 1, got {sampling.n_steps_each}')
  _require(sampling.step_lr > 0, 'step_lr', f'must be > 0, got {sampling.step_lr}')
  _require(sampling.num_samples >= 1, 'num_samples', f'must be >= 1, got {sampling.num_samples}')
  _require(sampling.sample_batch_size >= 1, 'sample_batch_size',
           f'must be >= 1, got {sampling.sample_batch_size}')
  _require(sampling.num_snapshots >= 1, 'num_snapshots', f'must be >= 1, got {sampling.num_snapshots}')
  _require(sampling.summary_samples >= 0, 'summary_samples',
           f'must be >= 0, got {sampling.summary_samples}')
  _require(sampling.num_inpaint_images >= 1, 'num_inpaint_images',
           f'must be >= 1, got {sampling.num_inpaint_images}')
  _require(sampling.inpaint_completions >= 1, 'inpaint_completions',
           f'must be >= 1, got {sampling.inpaint_completions}')
  kinds = ('right', 'left', 'top', 'bottom', 'center', 'random')
  _require(sampling.inpaint_mask in kinds or os.path.isfile(sampling.inpaint_mask), 'inpaint_mask',
           f'must be one of {", ".join(kinds)} or an existing image file, got {sampling.inpaint_mask!r}')


def _validate_eval(config: Config):
  ev = config.eval
  if config.mode == 'stats':
    _require(not config.data.is_toy, 'mode', 'stats needs an image --dataset')
  _require(ev.num_samples == 0 or ev.num_samples >= 2, 'eval_samples',
           f'must be 0 (held-out loss only) or >= 2 (a covariance), got {ev.num_samples}')
  _require(ev.batch_size >= 1, 'eval_batch_size', f'must be >= 1, got {ev.batch_size}')
  _require(ev.reference_images >= 0, 'reference_images', f'must be >= 0, got {ev.reference_images}')
  steps = ev.checkpoints.split(',')
  _require(ev.checkpoints in ('latest', 'all') or all(s.strip().isdigit() for s in steps),
           'eval_checkpoints', f'must be latest, all or comma-separated steps, got {ev.checkpoints!r}')
  _require(ev.inception_kind in INCEPTION_KINDS, 'inception_kind',
           f'must be one of {", ".join(INCEPTION_KINDS)}, got {ev.inception_kind!r}')
  needs_features = not config.data.is_toy and (
      config.mode == 'stats' or (config.mode == 'eval' and ev.num_samples > 0))
  if needs_features and ev.inception_kind != 'tiny_random':
    where = ('classify_image_graph_def.pb from http://download.tensorflow.org/models/image/'
             'imagenet/inception-2015-12-05.tgz' if ev.inception_kind == 'fid_graph'
             else 'a keras.applications InceptionV3 (include_top=True) weights file')
    _require(bool(ev.inception_path), 'inception_path',
             f'is required for --mode={config.mode} with --inception_kind={ev.inception_kind}: '
             f'{where} (or --eval_samples=0 for the held-out loss only)')


#: Fields that may change between runs on one workdir: they change how long,
#: how often, where and how a run executes, not which model it trains.
RESUME_SAFE_FIELDS = frozenset({
    'name', 'workdir', 'mode', 'experiment', 'data.data_dir', 'data.data_path',
    'train.train_steps', 'train.train_minutes', 'train.snapshot_freq', 'train.log_freq', 'train.max_checkpoints',
    'train.heldout_batches', 'train.num_cpu_replicas', 'train.jit_compile', 'train.strategy',
    'train.skip_nonfinite', 'train.deterministic', 'train.max_chunk_steps',
    'export.export_dir'}) | frozenset(f'sampling.{f.name}' for f in dataclasses.fields(SamplingConfig))


def _flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def resume_mismatches(saved: dict, config: Config) -> list[str]:
  """'field: saved -> new' for each model/data/training field that differs.

  `saved` is a workdir's config.json. A field it lacks was added after that
  workdir was written, and its default is the behaviour from before it existed
  (a U-Net without --unet_norm had GroupNorm), so the default stands in for it.
  """
  old = {**_flatten(Config().to_dict()), **_flatten(saved)}
  new = _flatten(config.to_dict())
  def flag(key):
    return 'model' if key == 'model.name' else key.split('.')[-1]
  return [f'--{flag(key)} {old[key]!r} -> {new[key]!r}' for key in sorted(new)
          if key in old and key not in RESUME_SAFE_FIELDS and old[key] != new[key]]
