"""Every check of a Config that needs no TensorFlow: one-line ConfigErrors naming the flag.

`validate(config)` runs before any work (run.py calls it through
ncsn_tf/config/flags.py before TensorFlow even loads). It imports the
--extensions modules first, then checks every field's allowed values, ranges
and how the fields fit together. What the registries own (which networks,
SDEs and samplers exist and what they can do) is checked by their own
`check_config`, which ncsn_tf.api.validate runs after this.
"""

import json
import math
import os

from PIL import Image

from ncsn_tf import catalog
from ncsn_tf.config import extensions
from ncsn_tf.config import schema


#: The largest int32: sizes stored in an export are int32 tensors.
_INT32_MAX = 2**31 - 1


def _require(condition: bool, flag: str, message: str):
  if not condition:
    raise schema.ConfigError(f'--{flag}: {message}')


def validate(config: schema.Config) -> schema.Config:
  """Checks every field; returns `config` or raises ConfigError naming the flag.

  Fields with `choices` are checked here first, for every setting alike; the
  rest of the checks are per field and across fields.
  """
  # Extensions first: they may register the dataset, network, SDE or sampler named below.
  extensions.load(config.extensions)
  _require(config.data.dataset in catalog.names(), 'dataset',
           f'must be one of {", ".join(catalog.names())}, got {config.data.dataset!r}')
  for s in schema.settings():
    if s.choices:
      value = s.get(config)
      _require(value in s.choices, s.flag,
               f'must be one of {", ".join(map(str, s.choices))}, got {value!r}')
  _require_finite_numbers(config)
  _require(bool(config.workdir), 'workdir', 'must not be empty')
  _require(config.seed >= 0, 'seed', f'must be >= 0, got {config.seed}')
  if config.mode == 'inpaint':
    _require(not config.data.is_toy, 'mode', 'inpaint needs an image --dataset')
  if config.mode == 'colorize':
    _require(not config.data.is_toy and catalog.get(config.data.dataset).channels == 3, 'mode',
             f'colorize needs an RGB image --dataset; {config.data.dataset} has '
             f'{"2-D points" if config.data.is_toy else "one channel"}')
    _require(not config.data.logit_transform, 'logit_transform',
             'colorize knows the grey axis of pixel values, which is not linear in logits: '
             'pass --logit_transform=false')
  if config.mode == 'experiment':
    image_experiment = config.experiment in schema.IMAGE_EXPERIMENTS
    _require(config.data.is_toy != image_experiment, 'experiment',
             f'{config.experiment} needs an image --dataset with a judge (digits, shapes)'
             if image_experiment else
             f'{config.experiment} needs a toy --dataset (exact scores); an image run has '
             f'{", ".join(schema.IMAGE_EXPERIMENTS)}')
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
  _require(1 <= config.export.max_batch <= _INT32_MAX, 'export_max_batch',
           f'must be in [1, {_INT32_MAX}] (an int32 in the export), got {config.export.max_batch}')
  _require_writable_dir(config.workdir, 'workdir')
  saved_config = os.path.join(config.workdir, 'config.json')
  if os.path.isfile(saved_config):  # What the resume check will compare with.
    read_json(saved_config, 'workdir')
  _require_writable_dir(config.export.export_dir, 'export_dir')
  return config


def _require_finite_numbers(config: schema.Config):
  """Every float setting is a number, and finite unless +infinity means something there
  (`infinite_ok`: S_tmax). NaN passes every `>` and `<` check below (each comparison is
  False, and most checks are written as "refuse if x <= 0"); time limits use 0 for none."""
  for s in schema.settings():
    if s.value_type is float:
      value = s.get(config)
      if s.field.metadata.get('infinite_ok') and value == math.inf:
        continue
      _require(value is not None and math.isfinite(value), s.flag,
               f'must be a finite number, got {value}')


def _require_image_file(path: str, flag: str):
  """`path` decodes as an image (PIL reads the whole file, not just its header)."""
  try:
    with Image.open(path) as image:
      image.load()
  except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for undecodable files
    _require(False, flag, f'{path!r} does not decode as an image ({type(e).__name__}: '
             f'{str(e).splitlines()[0] if str(e) else "unreadable"})')


def read_json(path: str, flag: str) -> dict:
  """The JSON object in `path` (a run's config.json), or a one-line ConfigError naming
  the flag and the file."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise schema.ConfigError(f'--{flag}: {path} is not readable JSON ({e}); restore it from a '
                             'copy, or use a new directory') from None
  _require(isinstance(value, dict), flag, f'{path} holds no JSON object')
  return value


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
    raise schema.ConfigError(f'--strategy: TF_CONFIG is not valid JSON ({e})') from None
  _require(isinstance(parsed, dict) and isinstance(parsed.get('cluster'), dict)
           and isinstance(parsed.get('task'), dict), 'strategy',
           'TF_CONFIG must be {"cluster": {...}, "task": {"type": ..., "index": ...}}')
  return parsed


def num_workers(train: schema.TrainConfig) -> int:
  """Workers (chief included) of a multi_worker run; 1 otherwise."""
  if train.strategy != 'multi_worker':
    return 1
  cluster = tf_config_cluster() or {'cluster': {}}
  return sum(len(cluster['cluster'].get(kind, [])) for kind in ('chief', 'worker')) or 1


def _validate_data(data: schema.DataConfig):
  spec = catalog.get(data.dataset)
  if spec.source == 'folder':
    _require(bool(data.data_path), 'data_path', f'is required with --dataset={data.dataset}')
    _require(os.path.isdir(data.data_path), 'data_path', f'{data.data_path!r} is not a directory')
    _require(os.access(data.data_path, os.R_OK | os.X_OK), 'data_path',
             f'{data.data_path!r} is not readable; fix its permissions')
  if data.is_toy:
    return
  fits = data.image_size >= spec.min_size and data.image_size % spec.size_multiple == 0
  if spec.min_size == spec.size_multiple:  # Upscaled by an integer factor from its native size.
    _require(fits, 'image_size', f'--dataset={data.dataset} needs a multiple of '
             f'{spec.size_multiple} (native {spec.size_multiple}x{spec.size_multiple}), '
             f'got {data.image_size}')
  else:
    _require(fits, 'image_size', f'must be a multiple of {spec.size_multiple} and >= '
             f'{spec.min_size}, got {data.image_size}')


def _validate_model(model: schema.ModelConfig, data: schema.DataConfig):
  # Which networks take which data is the network registry's (models/registry.py
  # check_config); the checks here are of the networks' own settings.
  if not data.is_toy:
    if model.name == 'unet':
      _require(data.image_size % schema.UNET_SIZE_MULTIPLE == 0, 'image_size',
               f'--model=unet needs a multiple of {schema.UNET_SIZE_MULTIPLE}, got {data.image_size}')
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
    _require(model.name in ('refinenet', 'unet'), 'preconditioning',
             f'edm applies to --model=refinenet or unet, got {model.name!r}')
    _require(not model.scale_by_sigma, 'preconditioning',
             'edm scales the output itself; pass --scale_by_sigma=false with it')
    _require(model.sigma_data > 0, 'sigma_data', f'must be > 0, got {model.sigma_data}')


def _validate_train(train: schema.TrainConfig):
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


def _validate_sampling(sampling: schema.SamplingConfig):
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
  if sampling.inpaint_mask not in kinds:
    _require_image_file(sampling.inpaint_mask, 'inpaint_mask')


def _validate_continuous(config: schema.Config):
  """The SDE, the continuous-σ network, its loss and the samplers fit together."""
  m, t, s = config.model, config.train, config.sampling
  continuous = m.noise_embedding == 'fourier'
  # Which networks take σ, which SDEs exist and which samplers need one are the
  # registries' (models/registry.py, noise/sde.py, sampling/samplers/registry.py:
  # their check_config, run after this by ncsn_tf.api.validate).
  if continuous:
    _require(m.preconditioning == 'none' or m.name == 'unet', 'preconditioning',
             f'{m.preconditioning} applies to the ladder networks and the fourier U-Net; '
             f'--model={m.name} scales its own input and output')
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
  if t.edm_weighting:
    _require(t.loss == 'continuous_dsm', 'edm_weighting',
             f'applies to --loss=continuous_dsm, got {t.loss!r}')
    _require(not t.likelihood_weighting, 'edm_weighting',
             'and --likelihood_weighting are two weightings: pass one')
    _require(m.preconditioning == 'edm', 'edm_weighting',
             'weights the output of --preconditioning=edm; a σ-scaled score network has '
             'unit weight under the default σ² weighting already')
  if t.level_sampling == 'lognormal' and t.loss == 'continuous_dsm':
    _require(m.sde == 've', 'level_sampling',
             f'lognormal with continuous_dsm draws σ over the VE SDE\'s range; got --sde={m.sde}')
  # An SDE the registry does not know is refused by its check (ncsn_tf.api.validate).
  _require(m.prior_mean == 0 or m.sde not in ('none', 'vp', 'subvp'), 'prior_mean',
           f'applies to --sde=ve (the VP priors are centred by construction), got --sde={m.sde}')
  if m.sde in ('vp', 'subvp'):
    _require(m.beta_min > 0, 'beta_min', f'must be > 0, got {m.beta_min}')
    _require(m.beta_max > m.beta_min, 'beta_max',
             f'must be > --beta_min ({m.beta_min}), got {m.beta_max}')
  if config.mode == 'experiment' and config.experiment != 'all':
    wants_continuous = config.experiment in schema.CONTINUOUS_EXPERIMENTS
    _require(wants_continuous == continuous, 'experiment',
             f'{config.experiment} needs a continuous-σ run (--sde, --noise_embedding=fourier)'
             if wants_continuous else
             f'{config.experiment} trains ladder networks; a continuous-σ run has '
             f'{", ".join(schema.CONTINUOUS_EXPERIMENTS)}')
  _require(s.sampling_steps >= 1, 'sampling_steps', f'must be >= 1, got {s.sampling_steps}')
  _require(s.corrector_steps >= 0, 'corrector_steps', f'must be >= 0, got {s.corrector_steps}')
  _require(s.snr > 0, 'snr', f'must be > 0, got {s.snr}')
  _require(s.ode_rtol > 0, 'ode_rtol', f'must be > 0, got {s.ode_rtol}')
  _require(s.ode_atol > 0, 'ode_atol', f'must be > 0, got {s.ode_atol}')
  _require(0 < s.sampling_eps < 1, 'sampling_eps', f'must be in (0, 1), got {s.sampling_eps}')


def _validate_labels(config: schema.Config):
  """--task, --class_conditional and --guidance: labels exist and the pieces fit."""
  m, t, s = config.model, config.train, config.sampling
  classes = catalog.get(config.data.dataset).num_classes
  unlabelled = f'--dataset={config.data.dataset} has no class labels (labelled: ' \
               f'{", ".join(catalog.labelled())})'
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
  _require(s.class_label == -1 or s.guidance != 'none' or t.task == 'classifier', 'class_label',
           f'{s.class_label} applies to guided sampling: pass --guidance=free (a '
           '--class_conditional network) or --guidance=classifier with it')
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
  saved = read_json(os.path.join(wd, 'config.json'), 'classifier_workdir')
  _require(saved.get('train', {}).get('task') == 'classifier', 'classifier_workdir',
           f'{wd!r} is not a --task=classifier run')
  ours = {k: getattr(config.data, k) for k in _CLASSIFIER_DATA_FIELDS}
  theirs = {k: saved.get('data', {}).get(k) for k in ours}
  _require(ours == theirs, 'classifier_workdir',
           f'{wd!r} classified other data ({theirs}; this run: {ours})')


#: Data settings a guidance classifier must share with the score model (what x is).
_CLASSIFIER_DATA_FIELDS = ('dataset', 'image_size', 'logit_transform')


def _validate_likelihood(config: schema.Config):
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
    known = catalog.get(config.data.dataset).splits
    _require(ev.likelihood_split in known, 'likelihood_split',
             f'--dataset={config.data.dataset} has the splits {", ".join(known)}, '
             f'got {ev.likelihood_split!r}')


def _validate_eval(config: schema.Config):
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
