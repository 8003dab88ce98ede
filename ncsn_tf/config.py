"""The run configuration: frozen dataclasses grouped by concern, and validation.

`Config` is the only thing library code receives (never absl FLAGS). Every
invalid value raises `ConfigError` whose message names the command-line flag
and what is allowed, so `run.py` can print it as one line and exit nonzero
before any work is done.

Every field is declared with `setting(default, help, ...)`: its flag name, help
text, allowed values and resume-safety live in the field's metadata, from which
ncsn_tf/flags.py defines the command-line flags and builds the Config, and
`python -m ncsn_tf.configuration_doc` writes docs/configuration.md.
"""

import dataclasses
import json
import os

TOY_DATASETS = ('gmm', 'banana', 'rings', 'grid', 'gmm8')
IMAGE_DATASETS = ('mnist', 'cifar10', 'celeba', 'folder', 'shapes', 'digits')
MODES = ('train', 'sample', 'eval', 'export', 'experiment', 'inpaint', 'colorize', 'stats',
         'likelihood')
#: Image datasets with one channel (ncsn_tf/data/images.py CHANNELS; a test keeps them equal).
GREY_DATASETS = ('mnist', 'digits')
#: --inception_kind values: the network whose features FID/IS/KID use (ncsn_tf/evaluation.py).
INCEPTION_KINDS = ('fid_graph', 'keras', 'tiny_random')
MODELS = ('mlp', 'refinenet', 'unet')
# Score networks for images: the paper's RefineNet, or a small U-Net (models/unet.py).
IMAGE_MODELS = ('refinenet', 'unet')
# The U-Net halves the resolution three times (32 -> 4).
UNET_SIZE_MULTIPLE = 8
LOSSES = ('anneal_dsm', 'esm', 'ism', 'dsm', 'ssm', 'ssm_vr', 'anneal_ssm', 'continuous_dsm')
PROJECTIONS = ('gaussian', 'rademacher')
#: --experiment values of --mode=experiment (see ncsn_tf/experiments.py).
EXPERIMENTS = ('all', 'objectives', 'trajectories', 'samplers', 'weights', 'sde_samplers')
#: The experiments of a continuous-σ run (--noise_embedding=fourier); the others train ladder networks.
CONTINUOUS_EXPERIMENTS = ('sde_samplers',)
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
#: --sde values: none (NCSN's discrete ladder) or a noise process of ncsn_tf/noise.py.
SDES = ('none', 've', 'vp', 'subvp')
#: --noise_embedding values: one learned row per ladder level, or Fourier features of log σ.
NOISE_EMBEDDINGS = ('ladder', 'fourier')
#: Networks that take a continuous σ with --noise_embedding=fourier.
CONTINUOUS_MODELS = ('mlp', 'unet')
#: --sampler values (ncsn_tf/sampling/registry.py SAMPLERS; a test keeps them equal).
SAMPLERS = ('ald', 'pc', 'ode', 'heun')
#: --likelihood_source values: score a dataset split, or the model's own samples.
LIKELIHOOD_SOURCES = ('data', 'samples')
#: --probe values: the Hutchinson probes' distribution (ncsn_tf/likelihood.py PROBES).
HUTCHINSON_PROBES = ('rademacher', 'gaussian')
#: Splits --likelihood_split may name (a dataset without one fails before any work).
SPLITS = ('train', 'test', 'validation')
#: --task values: train a score network, or a noise-conditional classifier p(y | x, σ).
TASKS = ('score', 'classifier')
#: --guidance values (ncsn_tf/sampling/guidance.py): none, classifier guidance, classifier-free.
GUIDANCES = ('none', 'classifier', 'free')
#: Classes of the labelled datasets, for validation without importing TensorFlow
#: (ncsn_tf.data.NUM_CLASSES is the source; tests/test_guidance.py keeps them equal).
LABELLED_DATASETS = {'mnist': 10, 'cifar10': 10, 'digits': 10, 'shapes': 3}
#: --predictor and --corrector values of --sampler=pc (ncsn_tf/sampling/pc.py).
PREDICTORS = ('reverse_diffusion', 'euler_maruyama', 'ancestral', 'none')
CORRECTORS = ('langevin', 'ald', 'none')


class ConfigError(ValueError):
  """An invalid configuration value; the message starts with the flag name."""


def setting(default, help: str, *, flag: str | None = None, choices: tuple | None = None,
            enum: bool = False, resume_safe: bool = False, derived: str | None = None):
  """A Config field with everything its command-line flag needs, in one place.

  default: the field's default, and the flag's (unless `derived`).
  help: the flag's help text (`--help` and docs/configuration.md).
  flag: the flag's name when it is not the field's name (--model fills ModelConfig.name).
  choices: the allowed values; `validate` checks them ("must be one of ...").
  enum: the flag is an absl enum (absl rejects other values while parsing);
    otherwise a value outside `choices` fails in `validate` with a ConfigError.
  resume_safe: the value may change between runs on one workdir (RESUME_SAFE_FIELDS).
  derived: the flag defaults to None and an unset or empty flag takes this
    template's value, formatted with {name} (the config name) and {flagfile}
    (the last flagfile's name without .cfg).

  The flag's type follows the field's annotation: str (or str | None), int, float, bool.
  ncsn_tf/flags.py defines every flag from these fields and builds the Config
  from them; `python -m ncsn_tf.configuration_doc` writes docs/configuration.md.
  """
  if enum and not choices:
    raise ValueError('enum=True needs choices')
  metadata = {'help': help, 'flag': flag, 'choices': tuple(choices) if choices else None,
              'enum': enum, 'resume_safe': resume_safe, 'derived': derived}
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The dataset and its preprocessing (ncsn_tf/data/)."""
  dataset: str = setting('gmm', f'One of {", ".join(TOY_DATASETS + IMAGE_DATASETS)}.',
                         choices=TOY_DATASETS + IMAGE_DATASETS)
  data_dir: str | None = setting(None, 'tensorflow_datasets data_dir.', resume_safe=True)
  data_path: str | None = setting(None, 'Folder of JPEG/PNG images for --dataset=folder.',
                                  resume_safe=True)
  image_size: int = setting(32, 'Image height and width.')
  random_flip: bool = setting(True, 'Random horizontal flips (CIFAR-10, CelebA; not digits).')
  logit_transform: bool = setting(False, 'Train in logit space.')

  @property
  def is_toy(self) -> bool:
    return self.dataset in TOY_DATASETS


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The score network and its noise ladder (ncsn_tf/models/, ncsn_tf/sigmas.py)."""
  name: str = setting('mlp', f'One of {", ".join(MODELS)}.', flag='model', choices=MODELS)
  sigma_begin: float = setting(20.0, 'σ_1, the largest noise level.')
  sigma_end: float = setting(1.0, 'σ_L, the smallest noise level.')
  num_scales: int = setting(10, 'L, the number of noise levels.')
  ngf: int = setting(128, 'RefineNet / U-Net base width (filters), or MLP hidden units.')
  num_layers: int = setting(3, 'MLP hidden layers.')
  scale_by_sigma: bool = setting(
      True, "Score output divided by σ_i (NCSNv2 technique 3); false in the paper's image flagfiles.")
  conditional_norm: bool = setting(
      True, 'RefineNet normalizers: one CIN++ row per noise level (the paper), or false: '
      'one shared InstanceNorm++ row, the level entering only through '
      '--scale_by_sigma (NCSNv2) or --preconditioning=edm.')
  preconditioning: str = setting(
      'none', 'RefineNet / U-Net output: none (the network gives the score, or score·σ_i with '
      '--scale_by_sigma) or edm (Karras et al. 2022: a denoiser '
      'D = c_skip·y + c_out·F(c_in·y); needs --scale_by_sigma=false).', choices=PRECONDITIONINGS)
  sigma_data: float = setting(
      0.25, 'edm: the data standard deviation, in the data units of --sigma_begin '
      '(0.25 = EDM\'s 0.5 for images in [-1, 1]).')
  unet_norm: str = setting(
      'group', 'U-Net normalisation: group (GroupNorm in every residual block) or none '
      '(no normalisation, the input scaled to unit variance at every level; '
      'half the cost of a small U-Net\'s step on a CPU). Other models ignore it.',
      choices=UNET_NORMS)
  sde: str = setting(
      'none', 'Noise process: none (the discrete ladder of --sigma_begin, --sigma_end, '
      '--num_scales; the paper) or ve, vp, subvp (Song et al. 2021; ve runs from '
      'σ_min = --sigma_end to σ_max = --sigma_begin). Needs --noise_embedding=fourier '
      'and --loss=continuous_dsm.', choices=SDES)
  noise_embedding: str = setting(
      'ladder', 'How the network sees the noise level: ladder (one learned row per level) '
      'or fourier (Gaussian Fourier features of log σ: any σ; --model=mlp or unet).',
      choices=NOISE_EMBEDDINGS)
  prior_mean: float = setting(
      0.0, '--sde=ve: the mean of the prior N(m, σ_max² I) in every coordinate; p_T is '
      'centred on the data mean, and the ODE and Heun samplers cannot undo an offset '
      '(docs/sde.md, "The prior"). Training does not use it, so it may change on resume.',
      resume_safe=True)
  beta_min: float = setting(0.1, '--sde=vp, subvp: β(0) (Song et al. 2021: 0.1).')
  beta_max: float = setting(20.0, '--sde=vp, subvp: β(1) (Song et al. 2021: 20).')
  class_conditional: bool = setting(
      False, 'A class-conditional score network s(x, σ, y) for classifier-free guidance '
      '(Ho & Salimans 2022): a label embedding (one row per class of the dataset, plus '
      '"no label") added to the noise embedding; trained with --label_dropout. Needs '
      '--noise_embedding=fourier and a labelled --dataset; --task=classifier ignores it.')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The optimisation, the training loop and its devices (ncsn_tf/train_lib.py)."""
  loss: str = setting('anneal_dsm', f'One of {", ".join(LOSSES)}.', choices=LOSSES)
  batch_size: int = setting(128, 'Global batch size.')
  learning_rate: float = setting(1e-3, 'Adam learning rate.')
  beta1: float = setting(0.9, 'Adam β1.')
  lr_schedule: str = setting(
      'constant', f'One of {", ".join(LR_SCHEDULES)}: constant --learning_rate, or '
      'a cosine decay from it to 0 at --train_steps.', choices=LR_SCHEDULES)
  warmup_steps: int = setting(0, 'Linear learning-rate warmup from 0 over the first N steps.')
  level_sampling: str = setting(
      'uniform', f'One of {", ".join(LEVEL_SAMPLINGS)}: how training draws each '
      'example\'s noise level; uniform over the ladder (the paper), or log σ ~ '
      'N(--level_log_mean, --level_log_std²) over it (EDM).', choices=LEVEL_SAMPLINGS)
  level_log_mean: float = setting(-1.2, '--level_sampling=lognormal: mean of log σ (EDM\'s P_mean).')
  level_log_std: float = setting(
      1.2, '--level_sampling=lognormal: standard deviation of log σ (EDM\'s P_std).')
  train_steps: int = setting(5000, 'Total training steps.', resume_safe=True)
  train_minutes: float = setting(
      0.0, 'Stop training before --train_steps once the training loop has run this many '
      'minutes, counted over resumes (0: no limit); the run then samples and '
      'exports as if it had reached --train_steps.', resume_safe=True)
  snapshot_freq: int = setting(1000, 'Checkpoint (and image samples) every N steps.',
                               resume_safe=True)
  log_freq: int = setting(100, 'TensorBoard scalars every N steps.', resume_safe=True)
  ema_rate: float = setting(0.0, 'EMA decay of the weights; 0 disables.')
  num_cpu_replicas: int = setting(
      0, 'Split the CPU into N logical devices for MirroredStrategy (0: off).', resume_safe=True)
  max_checkpoints: int = setting(5, 'Checkpoints kept.', resume_safe=True)
  heldout_batches: int = setting(
      4, 'Batches of held-out data for the DSM loss logged at each snapshot.', resume_safe=True)
  precision: str = setting(
      'auto', f'One of {", ".join(PRECISIONS)}; auto picks the fastest per device.',
      choices=PRECISIONS)
  jit_compile: bool = setting(False, 'XLA-compile the per-replica training step.',
                              resume_safe=True)
  num_projections: int = setting(1, 'Sliced score matching: projection vectors per example.')
  projection: str = setting('gaussian', 'Sliced score matching: distribution of the projection vectors.',
                            choices=PROJECTIONS, enum=True)
  strategy: str = setting(
      'auto', 'auto: all GPUs or --num_cpu_replicas, else one device; mirrored: '
      'MirroredStrategy on this machine; multi_worker: MultiWorkerMirroredStrategy '
      'over the cluster in TF_CONFIG.', choices=STRATEGIES, enum=True, resume_safe=True)
  skip_nonfinite: bool = setting(
      False, 'Skip steps with a non-finite loss or gradient (counted in TensorBoard) '
      'instead of stopping.', resume_safe=True)
  deterministic: bool = setting(
      False, 'TF op determinism: a resumed run ends with the same weights bit for bit.',
      resume_safe=True)
  max_chunk_steps: int = setting(
      100, 'Most steps per tf.function call; bounds how long SIGTERM waits for a save.',
      resume_safe=True)
  task: str = setting(
      'score', 'What --mode=train trains: score (the score network) or classifier (a '
      'noise-conditional classifier p(y | x, σ) on perturbed data for --guidance=classifier, '
      'in its own --workdir; needs a labelled --dataset).', choices=TASKS)
  label_dropout: float = setting(
      0.1, '--class_conditional: the share of training labels replaced by "no label", so one '
      'network learns s(x, σ, y) and s(x, σ) (Ho & Salimans 2022: 0.1-0.2).')
  likelihood_weighting: bool = setting(
      False, '--loss=continuous_dsm: weight the loss by g(t)² (Song et al. 2021, maximum '
      'likelihood training) instead of σ².')


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """The sampler and its settings, and inpainting (ncsn_tf/sampling/); all resume-safe."""
  sampler: str = setting(
      'ald', 'ald (annealed Langevin on the ladder, the paper), pc (predictor-corrector), '
      'ode (probability-flow ODE, adaptive) or heun (EDM, Karras et al. 2022); all but '
      'ald need --sde.', choices=SAMPLERS, resume_safe=True)
  predictor: str = setting('reverse_diffusion', '--sampler=pc: the predictor.',
                           choices=PREDICTORS, resume_safe=True)
  corrector: str = setting('langevin', '--sampler=pc: the corrector.', choices=CORRECTORS,
                           resume_safe=True)
  snr: float = setting(0.16, '--sampler=pc, corrector langevin or ald: the signal-to-noise '
                       'ratio r that sets the step (Song et al. 2021: 0.16 for VE).',
                       resume_safe=True)
  sampling_steps: int = setting(1000, '--sampler=pc: N, the time steps (Song et al. 2021: '
                                '1000); --sampler=heun: the σ steps.', resume_safe=True)
  corrector_steps: int = setting(1, '--sampler=pc: corrector steps after each predictor step.',
                                 resume_safe=True)
  ode_rtol: float = setting(1e-5, '--sampler=ode: the solver\'s relative tolerance.',
                            resume_safe=True)
  ode_atol: float = setting(1e-5, '--sampler=ode: the solver\'s absolute tolerance.',
                            resume_safe=True)
  sampling_eps: float = setting(1e-3, 'SDE samplers end at t = ε, in (0, 1) (Song et al. '
                                '2021: 1e-3 for VP, 1e-5 for VE).', resume_safe=True)
  n_steps_each: int = setting(100, 'T, Langevin steps per noise level.', resume_safe=True)
  step_lr: float = setting(0.05, 'ε: step ε_i = ε (σ_i/σ_L)², update x + ε_i s + sqrt(2ε_i) z.',
                           resume_safe=True)
  num_samples: int = setting(1280, 'Samples drawn after training and by --mode=sample.',
                             resume_safe=True)
  sample_batch_size: int = setting(1280, 'Samples per sampler call.', resume_safe=True)
  denoise: bool = setting(False, 'Final noise-free denoising step (NCSNv2).', resume_safe=True)
  num_snapshots: int = setting(10, 'Chain states kept for strips and GIFs.', resume_safe=True)
  summary_samples: int = setting(16, 'Image samples drawn for TensorBoard at each snapshot (0: none).',
                                 resume_safe=True)
  inpaint_mask: str = setting(
      'right', 'right, left, top, bottom, center, random, or a mask image (white = known).',
      resume_safe=True)
  guidance: str = setting(
      'none', 'Class-conditional sampling (docs/controllable.md): none, classifier (classifier '
      'guidance, s + w ∇ log p(y | x, σ) with the classifier of --classifier_workdir) or free '
      '(classifier-free, (1 + w) s(x, y) − w s(x); needs --class_conditional).',
      choices=GUIDANCES, resume_safe=True)
  guidance_scale: float = setting(
      1.0, '--guidance: w >= 0 (classifier: w = 1 is Bayes\' rule; free: w = 0 is the '
      'conditional score).', resume_safe=True)
  class_label: int = setting(
      -1, '--guidance: the class to sample, in [0, classes), or -1 for a grid with one row '
      'per class.', resume_safe=True)
  classifier_workdir: str = setting(
      '', '--guidance=classifier: the workdir of a --task=classifier run (restored with its '
      'own config.json).', resume_safe=True)
  num_inpaint_images: int = setting(8, 'Test images to inpaint or colourise (--mode=colorize).',
                                    resume_safe=True)
  inpaint_completions: int = setting(4, 'Completions per image (inpainting and colourisation).',
                                     resume_safe=True)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """The SavedModel export (ncsn_tf/export.py)."""
  export_dir: str = setting('', 'SavedModel root; default saved_models/<config name>.',
                            resume_safe=True, derived=os.path.join('saved_models', '{name}'))


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Sample quality (ncsn_tf/evaluation.py, docs/evaluation.md) and likelihoods
  (ncsn_tf/likelihood_eval.py); all resume-safe: they choose what is measured, not the model."""
  num_samples: int = setting(
      50_000, 'Samples for Inception Score, FID and KID (50000 as published; 0: held-out loss only).',
      flag='eval_samples', resume_safe=True)
  batch_size: int = setting(500, 'Images per sampler call and Inception batch.',
                            flag='eval_batch_size', resume_safe=True)
  checkpoints: str = setting('latest', 'Checkpoints --mode=eval evaluates: latest, all, or '
                             'comma-separated steps.', flag='eval_checkpoints', resume_safe=True)
  inception_kind: str = setting(
      'fid_graph', f'One of {", ".join(INCEPTION_KINDS)}: fid_graph is the 2015 graph of '
      'published FID/IS; keras (InceptionV3) and tiny_random are not comparable.',
      choices=INCEPTION_KINDS, resume_safe=True)
  inception_path: str = setting(
      '', 'classify_image_graph_def.pb (or its directory) for fid_graph; a weights file for keras.', resume_safe=True)
  reference_stats: str = setting(
      '', 'FID statistics .npz (mu, sigma; TTUR files load as-is). Default: computed from '
      '--reference_split and cached under <workdir>/reference_stats/.', resume_safe=True)
  reference_split: str = setting('train', 'Dataset split for computed statistics.', resume_safe=True)
  reference_images: int = setting(0, 'Images for computed statistics (0: the whole split).', resume_safe=True)
  likelihood_source: str = setting(
      'data', '--mode=likelihood: score --likelihood_split of the dataset (data) or the '
      "model's own samples (samples, drawn with --sampler).", choices=LIKELIHOOD_SOURCES, resume_safe=True)
  likelihood_split: str = setting('test', '--mode=likelihood: the dataset split to score.',
                                  choices=SPLITS, resume_safe=True)
  likelihood_examples: int = setting(
      1000, '--mode=likelihood: examples to score (0: the whole split; toys: fresh draws).', resume_safe=True)
  hutchinson_probes: int = setting(
      1, '--mode=likelihood: Hutchinson-Skilling probes per example for the divergence '
      '(one draw, fixed over the solve; Song et al. 2021 use 1).', resume_safe=True)
  probe: str = setting('rademacher', '--mode=likelihood: the probes\' distribution.',
                       choices=HUTCHINSON_PROBES, resume_safe=True)
  exact_trace: bool = setting(
      False, '--mode=likelihood: the exact divergence by autodiff (one pass per dimension: '
      'toys only) instead of the Hutchinson estimate.', resume_safe=True)
  likelihood_repeats: int = setting(
      1, '--mode=likelihood, images: dequantisation draws averaged per image (docs/likelihood.md).', resume_safe=True)


@dataclasses.dataclass(frozen=True)
class Config:
  """The run: its name, directory and mode, and one group per concern."""
  name: str = setting('default', 'Name of this configuration; default: the flagfile name without .cfg.',
                      flag='config_name', resume_safe=True, derived='{flagfile}')
  workdir: str = setting('', 'Run directory; default runs/<config name>.', resume_safe=True,
                         derived=os.path.join('runs', '{name}'))
  mode: str = setting(
      'train', 'train (then sample, evaluate, export), sample, eval, export, experiment (toy lab), '
      'inpaint (images), colorize (RGB images) or stats (FID reference statistics of a dataset split).',
      choices=MODES, enum=True, resume_safe=True)
  seed: int = setting(0, 'Global seed: data, noise levels, Langevin noise.')
  experiment: str = setting('all', 'With --mode=experiment: the score-matching lab figure/table to make.',
                            choices=EXPERIMENTS, enum=True, resume_safe=True)
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


#: Config's groups by field name; Config's own fields (name, workdir, ...) form the group 'run'.
GROUPS = {'data': DataConfig, 'model': ModelConfig, 'train': TrainConfig,
          'sampling': SamplingConfig, 'export': ExportConfig, 'eval': EvalConfig}
_FLAG_TYPES = (str, int, float, bool)


@dataclasses.dataclass(frozen=True)
class Setting:
  """One command-line setting: a Config field declared with `setting`, and its flag."""
  path: str                  # 'train.batch_size'; Config's own fields: 'workdir'
  group: str                 # 'run', 'data', 'model', 'train', 'sampling', 'export', 'eval'
  field: dataclasses.Field

  @property
  def flag(self) -> str:
    return self.field.metadata['flag'] or self.field.name

  @property
  def help(self) -> str:
    return self.field.metadata['help']

  @property
  def choices(self) -> tuple | None:
    return self.field.metadata['choices']

  @property
  def enum(self) -> bool:
    return self.field.metadata['enum']

  @property
  def resume_safe(self) -> bool:
    return self.field.metadata['resume_safe']

  @property
  def derived(self) -> str | None:
    return self.field.metadata['derived']

  @property
  def default(self):
    return self.field.default

  @property
  def value_type(self) -> type:
    """str, int, float or bool, from the annotation (str | None gives str)."""
    annotation = self.field.type
    if annotation in _FLAG_TYPES:
      return annotation
    args = tuple(a for a in getattr(annotation, '__args__', ()) if a is not type(None))
    if len(args) == 1 and args[0] in _FLAG_TYPES and type(None) in annotation.__args__:
      return args[0]
    raise TypeError(f'{self.path}: a setting must be annotated str, int, float, bool or '
                    f'X | None, got {annotation!r}')

  def get(self, config: 'Config'):
    value = config
    for part in self.path.split('.'):
      value = getattr(value, part)
    return value


def _settings_of(cls, prefix: str, group: str) -> list:
  return [Setting(prefix + f.name, group, f) for f in dataclasses.fields(cls)
          if f.name not in GROUPS or cls is not Config]


def settings() -> tuple:
  """Every setting, Config's own first, then group by group, in field order."""
  found = _settings_of(Config, '', 'run')
  for group, cls in GROUPS.items():
    found += _settings_of(cls, f'{group}.', group)
  for s in found:
    if 'help' not in s.field.metadata:
      raise TypeError(f'{s.path}: declare Config fields with config.setting(...)')
  return tuple(found)


def _require(condition: bool, flag: str, message: str):
  if not condition:
    raise ConfigError(f'--{flag}: {message}')


def validate(config: Config) -> Config:
  """Checks every field; returns `config` or raises ConfigError naming the flag.

  Fields with `choices` are checked here first, for every setting alike; the
  rest of the checks are per field and across fields.
  """
  for s in settings():
    if s.choices:
      value = s.get(config)
      _require(value in s.choices, s.flag,
               f'must be one of {", ".join(s.choices)}, got {value!r}')
  _require(bool(config.workdir), 'workdir', 'must not be empty')
  _require(config.seed >= 0, 'seed', f'must be >= 0, got {config.seed}')
  if config.mode == 'inpaint':
    _require(not config.data.is_toy, 'mode', 'inpaint needs an image --dataset')
  if config.mode == 'colorize':
    _require(not config.data.is_toy and config.data.dataset not in GREY_DATASETS, 'mode',
             f'colorize needs an RGB image --dataset; {config.data.dataset} has '
             f'{"2-D points" if config.data.is_toy else "one channel"}')
    _require(not config.data.logit_transform, 'logit_transform',
             'colorize knows the grey axis of pixel values, which is not linear in logits: '
             'pass --logit_transform=false')
  if config.mode == 'experiment':
    _require(config.data.is_toy, 'mode', 'experiment needs a toy --dataset (exact scores)')
  if config.train.loss == 'esm':
    _require(config.data.is_toy, 'loss', 'esm needs the exact score: toy datasets only')
  _validate_data(config.data)
  _validate_model(config.model, config.data)
  _validate_train(config.train)
  _validate_sampling(config.sampling)
  _validate_continuous(config)
  _validate_labels(config)
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
  if data.dataset == 'folder':
    _require(bool(data.data_path), 'data_path', 'is required with --dataset=folder')
    _require(os.path.isdir(data.data_path), 'data_path', f'{data.data_path!r} is not a directory')
    _require(os.access(data.data_path, os.R_OK | os.X_OK), 'data_path',
             f'{data.data_path!r} is not readable; fix its permissions')
  if data.dataset == 'digits':  # Upscaled by an integer factor from 8x8 (data/digits.py).
    _require(data.image_size >= 8 and data.image_size % 8 == 0, 'image_size',
             f'--dataset=digits needs a multiple of 8 (native 8x8), got {data.image_size}')
  elif not data.is_toy:
    _require(data.image_size >= 16 and data.image_size % 4 == 0, 'image_size',
             f'must be a multiple of 4 and >= 16, got {data.image_size}')


def _validate_model(model: ModelConfig, data: DataConfig):
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
  if model.preconditioning == 'edm':
    _require(model.name in IMAGE_MODELS, 'preconditioning',
             f'edm applies to --model={" or ".join(IMAGE_MODELS)}, got {model.name!r}')
    _require(not model.scale_by_sigma, 'preconditioning',
             'edm scales the output itself; pass --scale_by_sigma=false with it')
    _require(model.sigma_data > 0, 'sigma_data', f'must be > 0, got {model.sigma_data}')


def _validate_train(train: TrainConfig):
  _require(train.batch_size >= 1, 'batch_size', f'must be >= 1, got {train.batch_size}')
  _require(train.num_projections >= 1, 'num_projections', f'must be >= 1, got {train.num_projections}')
  _require(train.learning_rate > 0, 'learning_rate', f'must be > 0, got {train.learning_rate}')
  _require(0 <= train.beta1 < 1, 'beta1', f'must be in [0, 1), got {train.beta1}')
  _require(train.warmup_steps >= 0, 'warmup_steps', f'must be >= 0, got {train.warmup_steps}')
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
  _require(train.heldout_batches >= 0, 'heldout_batches',
           f'must be >= 0, got {train.heldout_batches}')
  _require(train.max_checkpoints >= 1, 'max_checkpoints', f'must be >= 1, got {train.max_checkpoints}')
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


def _validate_continuous(config: Config):
  """The SDE, the continuous-σ network, its loss and the samplers fit together."""
  m, t, s = config.model, config.train, config.sampling
  continuous = m.noise_embedding == 'fourier'
  if continuous:
    _require(m.name in CONTINUOUS_MODELS, 'noise_embedding',
             f'fourier applies to --model={" or ".join(CONTINUOUS_MODELS)}, got {m.name!r}')
    _require(m.preconditioning == 'none', 'preconditioning',
             f'{m.preconditioning} is for the ladder networks; the fourier networks scale '
             'their own input and output')
    _require(m.sde != 'none', 'noise_embedding',
             'fourier trains on a continuous noise process: pass --sde=ve, vp or subvp')
    _require(t.loss == 'continuous_dsm', 'loss',
             f'--noise_embedding=fourier trains with continuous_dsm, got {t.loss!r}')
  if m.sde != 'none':
    _require(continuous, 'sde', f'{m.sde} needs a continuous-σ network: pass '
             '--noise_embedding=fourier (with --model=mlp or unet)')
  if t.loss == 'continuous_dsm':
    _require(m.sde != 'none', 'loss', 'continuous_dsm needs --sde=ve, vp or subvp')
  _require(not t.likelihood_weighting or t.loss == 'continuous_dsm', 'likelihood_weighting',
           f'applies to --loss=continuous_dsm, got {t.loss!r}')
  _require(m.prior_mean == 0 or m.sde == 've', 'prior_mean',
           f'applies to --sde=ve (the VP priors are centred by construction), got --sde={m.sde}')
  if m.sde in ('vp', 'subvp'):
    _require(m.beta_min > 0, 'beta_min', f'must be > 0, got {m.beta_min}')
    _require(m.beta_max > m.beta_min, 'beta_max',
             f'must be > --beta_min ({m.beta_min}), got {m.beta_max}')
  if config.mode == 'experiment' and config.experiment != 'all':
    wants_continuous = config.experiment in CONTINUOUS_EXPERIMENTS
    _require(wants_continuous == continuous, 'experiment',
             f'{config.experiment} needs a continuous-σ run (--sde, --noise_embedding=fourier)'
             if wants_continuous else
             f'{config.experiment} trains ladder networks; a continuous-σ run has '
             f'{", ".join(CONTINUOUS_EXPERIMENTS)}')
  if s.sampler != 'ald':
    _require(continuous, 'sampler',
             f'{s.sampler} needs a continuous-σ model (--sde and --noise_embedding=fourier); '
             'a ladder network answers only its own levels: use --sampler=ald')
  _require(s.sampling_steps >= (2 if s.sampler == 'heun' else 1), 'sampling_steps',
           f'must be >= {2 if s.sampler == "heun" else 1}, got {s.sampling_steps}')
  _require(s.corrector_steps >= 0, 'corrector_steps', f'must be >= 0, got {s.corrector_steps}')
  _require(s.snr > 0, 'snr', f'must be > 0, got {s.snr}')
  _require(s.ode_rtol > 0, 'ode_rtol', f'must be > 0, got {s.ode_rtol}')
  _require(s.ode_atol > 0, 'ode_atol', f'must be > 0, got {s.ode_atol}')
  _require(0 < s.sampling_eps < 1, 'sampling_eps', f'must be in (0, 1), got {s.sampling_eps}')


def _validate_labels(config: Config):
  """--task, --class_conditional and --guidance: labels exist and the pieces fit."""
  m, t, s = config.model, config.train, config.sampling
  classes = LABELLED_DATASETS.get(config.data.dataset, 0)
  unlabelled = f'--dataset={config.data.dataset} has no class labels (labelled: ' \
               f'{", ".join(LABELLED_DATASETS)})'
  _require(0 <= t.label_dropout < 1, 'label_dropout', f'must be in [0, 1), got {t.label_dropout}')
  if t.task == 'classifier':
    _require(classes > 0, 'task', f'classifier needs labels: {unlabelled}')
    _require(config.mode == 'train', 'mode',
             f'--task=classifier trains the classifier (--mode=train); sample with '
             f'--guidance=classifier --classifier_workdir={config.workdir} on the score '
             f'model\'s run instead of --mode={config.mode}')
  elif m.class_conditional:
    _require(classes > 0, 'class_conditional', unlabelled)
    _require(m.noise_embedding == 'fourier', 'class_conditional',
             'needs a continuous-σ network (--noise_embedding=fourier, --model=mlp or unet)')
  _require(s.guidance_scale >= 0, 'guidance_scale', f'must be >= 0, got {s.guidance_scale}')
  if s.guidance == 'none' or t.task == 'classifier':
    return
  _require(classes > 0, 'guidance', unlabelled)
  _require(-1 <= s.class_label < classes, 'class_label',
           f'must be -1 (one row per class) or in [0, {classes}), got {s.class_label}')
  if s.guidance == 'free':
    _require(m.class_conditional, 'guidance',
             'free (classifier-free) needs a class-conditional network: train with '
             '--class_conditional, or use --guidance=classifier')
    return
  wd = s.classifier_workdir
  _require(bool(wd), 'classifier_workdir', 'is required with --guidance=classifier: the '
           'workdir of a --task=classifier run')
  _require(os.path.isfile(os.path.join(wd, 'config.json')), 'classifier_workdir',
           f'{wd!r} holds no config.json: train the classifier first (--task=classifier '
           f'--workdir={wd})')
  _require(os.path.isfile(os.path.join(wd, 'checkpoints', 'checkpoint')), 'classifier_workdir',
           f'{wd!r} holds no checkpoint: train the classifier first (--task=classifier '
           f'--workdir={wd})')
  with open(os.path.join(wd, 'config.json')) as f:
    saved = json.load(f)
  _require(saved.get('train', {}).get('task') == 'classifier', 'classifier_workdir',
           f'{wd!r} is not a --task=classifier run')
  ours = {k: getattr(config.data, k) for k in _CLASSIFIER_DATA_FIELDS}
  theirs = {k: saved.get('data', {}).get(k) for k in ours}
  _require(ours == theirs, 'classifier_workdir',
           f'{wd!r} classified other data ({theirs}; this run: {ours})')


#: Data settings a guidance classifier must share with the score model (what x is).
_CLASSIFIER_DATA_FIELDS = ('dataset', 'image_size', 'logit_transform')


def _validate_likelihood(config: Config):
  ev = config.eval
  _require(ev.hutchinson_probes >= 1, 'hutchinson_probes',
           f'must be >= 1, got {ev.hutchinson_probes}')
  _require(ev.likelihood_repeats >= 1, 'likelihood_repeats',
           f'must be >= 1, got {ev.likelihood_repeats}')
  _require(ev.likelihood_examples >= (1 if config.data.is_toy else 0), 'likelihood_examples',
           f'must be >= {1 if config.data.is_toy else 0}'
           f'{" (toys draw fresh examples)" if config.data.is_toy else " (0: the whole split)"}, '
           f'got {ev.likelihood_examples}')
  if config.mode != 'likelihood':
    return
  _require(config.model.noise_embedding == 'fourier' and config.model.sde != 'none', 'mode',
           'likelihood integrates the probability-flow ODE, which needs a continuous-σ model '
           '(--sde and --noise_embedding=fourier); a ladder network has no score between its levels')
  if not config.data.is_toy:
    dims = 3 * config.data.image_size**2  # The most an image of this size can have.
    _require(not ev.exact_trace, 'exact_trace',
             f'is for the toys (one backward pass per dimension; images have up to {dims}): '
             'use --hutchinson_probes')
    known = ('train', 'test') if config.data.dataset in ('shapes', 'folder', 'digits') else SPLITS
    _require(ev.likelihood_split in known, 'likelihood_split',
             f'--dataset={config.data.dataset} has the splits {", ".join(known)}, '
             f'got {ev.likelihood_split!r}')


def _validate_eval(config: Config):
  _validate_likelihood(config)
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
  needs_features = not config.data.is_toy and (
      config.mode == 'stats' or (config.mode == 'eval' and ev.num_samples > 0))
  if needs_features and ev.inception_kind != 'tiny_random':
    where = ('classify_image_graph_def.pb from http://download.tensorflow.org/models/image/'
             'imagenet/inception-2015-12-05.tgz' if ev.inception_kind == 'fid_graph'
             else 'a keras.applications InceptionV3 (include_top=True) weights file')
    _require(bool(ev.inception_path), 'inception_path',
             f'is required for --mode={config.mode} with --inception_kind={ev.inception_kind}: '
             f'{where} (or --eval_samples=0 for the held-out loss only)')


#: Fields that may change between runs on one workdir (`setting(..., resume_safe=True)`):
#: they change how long, how often, where and how a run executes, not which model it trains.
RESUME_SAFE_FIELDS = frozenset(s.path for s in settings() if s.resume_safe)
_FLAG_NAMES = {s.path: s.flag for s in settings()}


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
    return _FLAG_NAMES.get(key, key.split('.')[-1])
  return [f'--{flag(key)} {old[key]!r} -> {new[key]!r}' for key in sorted(new)
          if key in old and key not in RESUME_SAFE_FIELDS and old[key] != new[key]]
