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
_E = config_lib.EvalConfig()

# --- run -------------------------------------------------------------------
flags.DEFINE_string('config_name', None,
                    'Name of this configuration; default: the flagfile name without .cfg.')
flags.DEFINE_string('workdir', None, 'Run directory; default runs/<config name>.')
flags.DEFINE_enum('mode', 'train', config_lib.MODES,
                  'train (then sample, evaluate, export), sample, eval, export, experiment (toy lab), '
                  'inpaint (images) or stats (FID reference statistics of a dataset split).')
flags.DEFINE_integer('seed', 0, 'Global seed: data, noise levels, Langevin noise.')
flags.DEFINE_enum('experiment', 'all', config_lib.EXPERIMENTS,
                  'With --mode=experiment: the score-matching lab figure/table to make.')

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
flags.DEFINE_integer('ngf', _M.ngf, 'RefineNet / U-Net base width (filters), or MLP hidden units.')
flags.DEFINE_integer('num_layers', _M.num_layers, 'MLP hidden layers.')
flags.DEFINE_bool('scale_by_sigma', _M.scale_by_sigma,
                  "Score output divided by σ_i (NCSNv2 technique 3); false in the paper's image flagfiles.")
flags.DEFINE_bool('conditional_norm', _M.conditional_norm,
                  'RefineNet normalizers: one CIN++ row per noise level (the paper), or false: '
                  'one shared InstanceNorm++ row, the level entering only through '
                  '--scale_by_sigma (NCSNv2) or --preconditioning=edm.')
flags.DEFINE_string('preconditioning', _M.preconditioning,
                    'RefineNet / U-Net output: none (the network gives the score, or score·σ_i with '
                    '--scale_by_sigma) or edm (Karras et al. 2022: a denoiser '
                    'D = c_skip·y + c_out·F(c_in·y); needs --scale_by_sigma=false).')
flags.DEFINE_string('unet_norm', _M.unet_norm,
                    'U-Net normalisation: group (GroupNorm in every residual block) or none '
                    '(no normalisation, the input scaled to unit variance at every level; '
                    'half the cost of a small U-Net\'s step on a CPU). Other models ignore it.')
flags.DEFINE_float('sigma_data', _M.sigma_data,
                   'edm: the data standard deviation, in the data units of --sigma_begin '
                   '(0.25 = EDM\'s 0.5 for images in [-1, 1]).')

# --- training --------------------------------------------------------------
flags.DEFINE_string('loss', _T.loss, f'One of {", ".join(config_lib.LOSSES)}.')
flags.DEFINE_integer('batch_size', _T.batch_size, 'Global batch size.')
flags.DEFINE_float('learning_rate', _T.learning_rate, 'Adam learning rate.')
flags.DEFINE_float('beta1', _T.beta1, 'Adam β1.')
flags.DEFINE_string('lr_schedule', _T.lr_schedule,
                    f'One of {", ".join(config_lib.LR_SCHEDULES)}: constant --learning_rate, or '
                    'a cosine decay from it to 0 at --train_steps.')
flags.DEFINE_integer('warmup_steps', _T.warmup_steps,
                     'Linear learning-rate warmup from 0 over the first N steps.')
flags.DEFINE_string('level_sampling', _T.level_sampling,
                    f'One of {", ".join(config_lib.LEVEL_SAMPLINGS)}: how training draws each '
                    'example\'s noise level; uniform over the ladder (the paper), or log σ ~ '
                    'N(--level_log_mean, --level_log_std²) over it (EDM).')
flags.DEFINE_float('level_log_mean', _T.level_log_mean,
                   '--level_sampling=lognormal: mean of log σ (EDM\'s P_mean).')
flags.DEFINE_float('level_log_std', _T.level_log_std,
                   '--level_sampling=lognormal: standard deviation of log σ (EDM\'s P_std).')
flags.DEFINE_integer('train_steps', _T.train_steps, 'Total training steps.')
flags.DEFINE_float('train_minutes', _T.train_minutes,
                   'Stop training before --train_steps once the training loop has run this many '
                   'minutes, counted over resumes (0: no limit); the run then samples and '
                   'exports as if it had reached --train_steps.')
flags.DEFINE_integer('snapshot_freq', _T.snapshot_freq, 'Checkpoint (and image samples) every N steps.')
flags.DEFINE_integer('log_freq', _T.log_freq, 'TensorBoard scalars every N steps.')
flags.DEFINE_float('ema_rate', _T.ema_rate, 'EMA decay of the weights; 0 disables.')
flags.DEFINE_integer('num_cpu_replicas', _T.num_cpu_replicas,
                     'Split the CPU into N logical devices for MirroredStrategy (0: off).')
flags.DEFINE_integer('max_checkpoints', _T.max_checkpoints, 'Checkpoints kept.')
flags.DEFINE_integer('heldout_batches', _T.heldout_batches,
                     'Batches of held-out data for the DSM loss logged at each snapshot.')
flags.DEFINE_string('precision', _T.precision,
                    f'One of {", ".join(config_lib.PRECISIONS)}; auto picks the fastest per device.')
flags.DEFINE_bool('jit_compile', _T.jit_compile, 'XLA-compile the per-replica training step.')
flags.DEFINE_integer('num_projections', _T.num_projections,
                     'Sliced score matching: projection vectors per example.')
flags.DEFINE_enum('projection', _T.projection, config_lib.PROJECTIONS,
                  'Sliced score matching: distribution of the projection vectors.')
flags.DEFINE_enum('strategy', _T.strategy, config_lib.STRATEGIES,
                  'auto: all GPUs or --num_cpu_replicas, else one device; mirrored: '
                  'MirroredStrategy on this machine; multi_worker: MultiWorkerMirroredStrategy '
                  'over the cluster in TF_CONFIG.')
flags.DEFINE_bool('skip_nonfinite', _T.skip_nonfinite,
                  'Skip steps with a non-finite loss or gradient (counted in TensorBoard) '
                  'instead of stopping.')
flags.DEFINE_bool('deterministic', _T.deterministic,
                  'TF op determinism: a resumed run ends with the same weights bit for bit.')
flags.DEFINE_integer('max_chunk_steps', _T.max_chunk_steps,
                     'Most steps per tf.function call; bounds how long SIGTERM waits for a save.')

# --- sampling --------------------------------------------------------------
flags.DEFINE_integer('n_steps_each', _S.n_steps_each, 'T, Langevin steps per noise level.')
flags.DEFINE_float('step_lr', _S.step_lr, 'ε: step ε_i = ε (σ_i/σ_L)², update x + ε_i s + sqrt(2ε_i) z.')
flags.DEFINE_integer('num_samples', _S.num_samples, 'Samples drawn after training and by --mode=sample.')
flags.DEFINE_integer('sample_batch_size', _S.sample_batch_size, 'Samples per sampler call.')
flags.DEFINE_bool('denoise', _S.denoise, 'Final noise-free denoising step (NCSNv2).')
flags.DEFINE_integer('num_snapshots', _S.num_snapshots, 'Chain states kept for strips and GIFs.')
flags.DEFINE_integer('summary_samples', _S.summary_samples,
                     'Image samples drawn for TensorBoard at each snapshot (0: none).')
flags.DEFINE_string('inpaint_mask', _S.inpaint_mask,
                    'right, left, top, bottom, center, random, or a mask image (white = known).')
flags.DEFINE_integer('num_inpaint_images', _S.num_inpaint_images, 'Test images to inpaint.')
flags.DEFINE_integer('inpaint_completions', _S.inpaint_completions, 'Completions per image.')

# --- evaluation (ncsn_tf/evaluation.py, docs/evaluation.md) ------------------
flags.DEFINE_integer('eval_samples', _E.num_samples,
                     'Samples for Inception Score, FID and KID (50000 as published; 0: held-out loss only).')
flags.DEFINE_integer('eval_batch_size', _E.batch_size, 'Images per sampler call and Inception batch.')
flags.DEFINE_string('eval_checkpoints', _E.checkpoints,
                    'Checkpoints --mode=eval evaluates: latest, all, or comma-separated steps.')
flags.DEFINE_string('inception_kind', _E.inception_kind,
                    f'One of {", ".join(config_lib.INCEPTION_KINDS)}: fid_graph is the 2015 graph of '
                    'published FID/IS; keras (InceptionV3) and tiny_random are not comparable.')
flags.DEFINE_string('inception_path', _E.inception_path,
                    'classify_image_graph_def.pb (or its directory) for fid_graph; a weights file for keras.')
flags.DEFINE_string('reference_stats', _E.reference_stats,
                    'FID statistics .npz (mu, sigma; TTUR files load as-is). Default: computed from '
                    '--reference_split and cached under <workdir>/reference_stats/.')
flags.DEFINE_string('reference_split', _E.reference_split, 'Dataset split for computed statistics.')
flags.DEFINE_integer('reference_images', _E.reference_images,
                     'Images for computed statistics (0: the whole split).')

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
      experiment=FLAGS.experiment,
      data=config_lib.DataConfig(
          dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, data_path=FLAGS.data_path,
          image_size=FLAGS.image_size, random_flip=FLAGS.random_flip,
          logit_transform=FLAGS.logit_transform),
      model=config_lib.ModelConfig(
          name=FLAGS.model, sigma_begin=FLAGS.sigma_begin, sigma_end=FLAGS.sigma_end,
          num_scales=FLAGS.num_scales, ngf=FLAGS.ngf, num_layers=FLAGS.num_layers,
          scale_by_sigma=FLAGS.scale_by_sigma, conditional_norm=FLAGS.conditional_norm,
          preconditioning=FLAGS.preconditioning, sigma_data=FLAGS.sigma_data,
          unet_norm=FLAGS.unet_norm),
      train=config_lib.TrainConfig(
          loss=FLAGS.loss, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
          beta1=FLAGS.beta1, lr_schedule=FLAGS.lr_schedule, warmup_steps=FLAGS.warmup_steps,
          level_sampling=FLAGS.level_sampling, level_log_mean=FLAGS.level_log_mean,
          level_log_std=FLAGS.level_log_std,
          train_steps=FLAGS.train_steps, train_minutes=FLAGS.train_minutes,
          snapshot_freq=FLAGS.snapshot_freq,
          log_freq=FLAGS.log_freq, ema_rate=FLAGS.ema_rate,
          num_cpu_replicas=FLAGS.num_cpu_replicas, max_checkpoints=FLAGS.max_checkpoints,
          precision=FLAGS.precision, jit_compile=FLAGS.jit_compile,
          heldout_batches=FLAGS.heldout_batches,
          num_projections=FLAGS.num_projections, projection=FLAGS.projection,
          strategy=FLAGS.strategy, skip_nonfinite=FLAGS.skip_nonfinite,
          deterministic=FLAGS.deterministic, max_chunk_steps=FLAGS.max_chunk_steps),
      sampling=config_lib.SamplingConfig(
          n_steps_each=FLAGS.n_steps_each, step_lr=FLAGS.step_lr, num_samples=FLAGS.num_samples,
          sample_batch_size=FLAGS.sample_batch_size, denoise=FLAGS.denoise,
          num_snapshots=FLAGS.num_snapshots, summary_samples=FLAGS.summary_samples,
          inpaint_mask=FLAGS.inpaint_mask, num_inpaint_images=FLAGS.num_inpaint_images,
          inpaint_completions=FLAGS.inpaint_completions),
      export=config_lib.ExportConfig(
          export_dir=FLAGS.export_dir or os.path.join('saved_models', name)),
      eval=config_lib.EvalConfig(
          num_samples=FLAGS.eval_samples, batch_size=FLAGS.eval_batch_size,
          checkpoints=FLAGS.eval_checkpoints, inception_kind=FLAGS.inception_kind,
          inception_path=FLAGS.inception_path, reference_stats=FLAGS.reference_stats,
          reference_split=FLAGS.reference_split, reference_images=FLAGS.reference_images),
  )
  return config_lib.validate(config)
