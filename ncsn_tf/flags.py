"""Every absl flag of `run.py`, and the one function that turns them into a Config.

This is the only module that defines or reads FLAGS. Flags are grouped by
concern (data, model, training, sampling, export) exactly like the Config
dataclasses they fill; defaults are the dataclass defaults, so a flagfile is a
short list of overrides.
"""

import os

from absl import flags

from ncsn_tf import config as config_lib

FLAGS = flags.FLAGS
_D, _M, _T, _S = (config_lib.DataConfig(), config_lib.ModelConfig(), config_lib.TrainConfig(),
                  config_lib.SamplingConfig())

# --- run -------------------------------------------------------------------
flags.DEFINE_string('config_name', None,
                    'Name of this configuration; default: the flagfile name without .cfg.')
flags.DEFINE_string('workdir', None, 'Run directory; default runs/<config name>.')
flags.DEFINE_enum('mode', 'train', config_lib.MODES,
                  'train (then sample, evaluate, export), sample, eval or export.')
flags.DEFINE_integer('seed', 0, 'Global seed: data, noise levels, Langevin noise.')

# --- data ------------------------------------------------------------------
flags.DEFINE_string('dataset', _D.dataset,
                    f'One of {", ".join(config_lib.TOY_DATASETS + config_lib.IMAGE_DATASETS)}.')
flags.DEFINE_string('data_dir', _D.data_dir, 'tensorflow_datasets data_dir.')
flags.DEFINE_string('data_path', _D.data_path, 'Folder of JPEG/PNG images for --dataset=folder.')
flags.DEFINE_integer('image_size', _D.image_size, 'Image height and width.')
flags.DEFINE_bool('random_flip', _D.random_flip, 'Random horizontal flips (CIFAR-10, CelebA).')
flags.DEFINE_bool('logit_transform', _D.logit_transform, 'Train in logit space.')

# --- model -----------------------------------------------------------------
flags.DEFINE_string('model', _M.name, f'One of {", ".join(config_lib.MODELS)}.')
flags.DEFINE_float('sigma_begin', _M.sigma_begin, 'σ_1, the largest noise level.')
flags.DEFINE_float('sigma_end', _M.sigma_end, 'σ_L, the smallest noise level.')
flags.DEFINE_integer('num_scales', _M.num_scales, 'L, the number of noise levels.')
flags.DEFINE_integer('ngf', _M.ngf, 'RefineNet width (filters), or MLP hidden units.')
flags.DEFINE_integer('num_layers', _M.num_layers, 'MLP hidden layers.')
flags.DEFINE_bool('scale_by_sigma', _M.scale_by_sigma, 'MLP output divided by σ_i.')

# --- training --------------------------------------------------------------
flags.DEFINE_string('loss', _T.loss, f'One of {", ".join(config_lib.LOSSES)}.')
flags.DEFINE_integer('batch_size', _T.batch_size, 'Global batch size.')
flags.DEFINE_float('learning_rate', _T.learning_rate, 'Adam learning rate.')
flags.DEFINE_float('beta1', _T.beta1, 'Adam β1.')
flags.DEFINE_integer('train_steps', _T.train_steps, 'Total training steps.')
flags.DEFINE_integer('snapshot_freq', _T.snapshot_freq, 'Checkpoint (and image samples) every N steps.')
flags.DEFINE_integer('log_freq', _T.log_freq, 'TensorBoard scalars every N steps.')
flags.DEFINE_float('ema_rate', _T.ema_rate, 'EMA decay of the weights; 0 disables.')
flags.DEFINE_integer('num_cpu_replicas', _T.num_cpu_replicas,
                     'Split the CPU into N logical devices for MirroredStrategy (0: off).')
flags.DEFINE_integer('max_checkpoints', _T.max_checkpoints, 'Checkpoints kept.')

# --- sampling --------------------------------------------------------------
flags.DEFINE_integer('n_steps_each', _S.n_steps_each, 'T, Langevin steps per noise level.')
flags.DEFINE_float('step_lr', _S.step_lr, 'ε: step ε_i = ε (σ_i/σ_L)², update x + ε_i s + sqrt(2ε_i) z.')
flags.DEFINE_integer('num_samples', _S.num_samples, 'Samples drawn after training and by --mode=sample.')
flags.DEFINE_integer('sample_batch_size', _S.sample_batch_size, 'Samples per sampler call.')
flags.DEFINE_bool('denoise', _S.denoise, 'Final noise-free denoising step (NCSNv2).')
flags.DEFINE_integer('num_snapshots', _S.num_snapshots, 'Chain states kept for strips and GIFs.')

# --- export ----------------------------------------------------------------
flags.DEFINE_string('export_dir', None, 'SavedModel root; default saved_models/<config name>.')


def config_name_from_argv(argv) -> str:
  """The name of the last --flagfile in `argv` without directory and .cfg."""
  name = 'default'
  for arg in argv:
    if arg.startswith('--flagfile='):
      name = os.path.splitext(os.path.basename(arg.split('=', 1)[1]))[0]
  return name


def build_config(argv) -> config_lib.Config:
  """A validated Config from the parsed FLAGS; raises ConfigError."""
  name = FLAGS.config_name or config_name_from_argv(argv)
  config = config_lib.Config(
      name=name,
      workdir=FLAGS.workdir or os.path.join('runs', name),
      mode=FLAGS.mode,
      seed=FLAGS.seed,
      data=config_lib.DataConfig(
          dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, data_path=FLAGS.data_path,
          image_size=FLAGS.image_size, random_flip=FLAGS.random_flip,
          logit_transform=FLAGS.logit_transform),
      model=config_lib.ModelConfig(
          name=FLAGS.model, sigma_begin=FLAGS.sigma_begin, sigma_end=FLAGS.sigma_end,
          num_scales=FLAGS.num_scales, ngf=FLAGS.ngf, num_layers=FLAGS.num_layers,
          scale_by_sigma=FLAGS.scale_by_sigma),
      train=config_lib.TrainConfig(
          loss=FLAGS.loss, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
          beta1=FLAGS.beta1, train_steps=FLAGS.train_steps, snapshot_freq=FLAGS.snapshot_freq,
          log_freq=FLAGS.log_freq, ema_rate=FLAGS.ema_rate,
          num_cpu_replicas=FLAGS.num_cpu_replicas, max_checkpoints=FLAGS.max_checkpoints),
      sampling=config_lib.SamplingConfig(
          n_steps_each=FLAGS.n_steps_each, step_lr=FLAGS.step_lr, num_samples=FLAGS.num_samples,
          sample_batch_size=FLAGS.sample_batch_size, denoise=FLAGS.denoise,
          num_snapshots=FLAGS.num_snapshots),
      export=config_lib.ExportConfig(
          export_dir=FLAGS.export_dir or os.path.join('saved_models', name)),
  )
  return config_lib.validate(config)
