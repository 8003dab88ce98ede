"""The run configuration's schema: frozen dataclasses grouped by concern, one field per setting.

`Config` is the only thing library code receives (never absl FLAGS). Every
field is declared with `setting(default, help, ...)`: its flag name, help
text, allowed values and resume-safety live in the field's metadata, from which
ncsn_tf/config/flags.py defines the command-line flags and builds the Config,
validate.py checks it, resume.py tells which fields may change on a workdir,
and `python -m ncsn_tf.config.docs` writes docs/configuration.md.
"""

import dataclasses
import json
import os

from ncsn_tf import catalog

#: --mode values and what each does (the flag's help is made from this table).
MODE_HELP = {
    'train': 'train (or resume), then sample, evaluate and export',
    'sample': 'samples of the latest checkpoint',
    'eval': 'metrics of checkpoints (toys: exact; images: IS/FID/KID and held-out loss)',
    'export': 'a new SavedModel version',
    'experiment': 'the score-matching lab (toys); on an image run, --experiment=sampler_sweep',
    'inpaint': 'complete masked test images',
    'colorize': 'colour grey test images (RGB)',
    'stats': 'FID reference statistics of a dataset split',
    'likelihood': 'exact log-likelihoods by the probability-flow ODE (continuous-σ models)',
}
MODES = tuple(MODE_HELP)


#: --inception_kind values: the network whose features FID/IS/KID use (ncsn_tf/evaluation/images.py).
INCEPTION_KINDS = ('fid_graph', 'keras', 'tiny_random')


# The U-Net halves the resolution three times (32 -> 4).
UNET_SIZE_MULTIPLE = 8


LOSSES = ('anneal_dsm', 'esm', 'ism', 'dsm', 'ssm', 'ssm_vr', 'anneal_ssm', 'continuous_dsm')


PROJECTIONS = ('gaussian', 'rademacher')


#: --experiment values of --mode=experiment (see ncsn_tf/lab/experiments.py).
EXPERIMENTS = ('all', 'objectives', 'trajectories', 'samplers', 'weights', 'sde_samplers',
               'sampler_sweep')


#: The experiments of a continuous-σ run (--noise_embedding=fourier); the others train ladder networks.
CONTINUOUS_EXPERIMENTS = ('sde_samplers', 'sampler_sweep')


#: The experiments of an image run (the rest need a toy's exact scores); not part of `all`.
IMAGE_EXPERIMENTS = ('sampler_sweep',)


PRECISIONS = ('auto', 'float32', 'mixed_bfloat16', 'mixed_float16')


#: --strategy values: auto (GPUs or --num_cpu_replicas, else one device),
#: mirrored (MirroredStrategy on this machine), multi_worker (TF_CONFIG).
STRATEGIES = ('auto', 'mirrored', 'multi_worker')


#: --lr_schedule values (ncsn_tf/runtime/lr_schedule.py).
LR_SCHEDULES = ('constant', 'cosine')


#: --level_sampling values: how training draws each example's noise level.
LEVEL_SAMPLINGS = ('uniform', 'lognormal')


#: --preconditioning values: how the image network's output becomes the score.
PRECONDITIONINGS = ('none', 'edm')


#: --unet_norm values (models/unet.py NORMS): GroupNorm, or none with a unit-scale input.
UNET_NORMS = ('group', 'none')


#: --noise_embedding values: one learned row per ladder level, or Fourier features of log σ.
NOISE_EMBEDDINGS = ('ladder', 'fourier')


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


#: --predictor and --corrector values of --sampler=pc (ncsn_tf/sampling/samplers/pc.py).
PREDICTORS = ('reverse_diffusion', 'euler_maruyama', 'ancestral', 'none')


CORRECTORS = ('langevin', 'ald', 'none')


#: --solver_order and --sigma_schedule values of --sampler=dpm_solver
#: (ncsn_tf/sampling/samplers/dpm_solver.py ORDERS, SCHEDULES).
SOLVER_ORDERS = (1, 2, 3)
SIGMA_SCHEDULES = ('logsnr', 'karras', 'time_uniform')


#: --condition_method values (ncsn_tf/sampling/samplers/condition_corrector.py).
CONDITION_METHODS = ('flow', 'langevin')


#: --adaptive_step_control values (ncsn_tf/sampling/samplers/adaptive_sde.py STEP_CONTROLS).
STEP_CONTROLS = ('batch', 'per_example')


class ConfigError(ValueError):
  """An invalid configuration value; the message starts with the flag name."""


def setting(default, help: str, *, flag: str | None = None, choices: tuple | None = None,
            enum: bool = False, resume_safe: bool = False, derived: str | None = None,
            infinite_ok: bool = False):
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
  infinite_ok: a float setting where infinity means something (S_tmax: no bound);
    every other float setting must be finite, and none may be NaN (`validate`).

  The flag's type follows the field's annotation: str (or str | None), int, float, bool.
  ncsn_tf/config/flags.py defines every flag from these fields and builds the Config
  from them; `python -m ncsn_tf.configuration_doc` writes docs/configuration.md.
  """
  if enum and not choices:
    raise ValueError('enum=True needs choices')
  metadata = {'help': help, 'flag': flag, 'choices': tuple(choices) if choices else None,
              'enum': enum, 'resume_safe': resume_safe, 'derived': derived,
              'infinite_ok': infinite_ok}
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The dataset and its preprocessing (ncsn_tf/data/)."""
  dataset: str = setting('gmm', f'A dataset of ncsn_tf/catalog.py: {", ".join(catalog.names())} '
                         '(or one an --extensions module registers).')
  data_dir: str | None = setting(None, 'tensorflow_datasets data_dir.', resume_safe=True)
  data_path: str | None = setting(None, 'Folder of JPEG/PNG images for --dataset=folder.',
                                  resume_safe=True)
  image_size: int = setting(32, 'Image height and width.')
  random_flip: bool = setting(True, 'Random horizontal flips (CIFAR-10, CelebA; not digits).')
  logit_transform: bool = setting(False, 'Train in logit space.')

  @property
  def is_toy(self) -> bool:
    return catalog.get(self.dataset).is_toy


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The score network and its noise ladder (ncsn_tf/models/, ncsn_tf/noise/ladder.py)."""
  name: str = setting('mlp', 'A registered network (ncsn_tf/models/): mlp (toys), refinenet '
                      '(the paper\'s) or unet.', flag='model')
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
      'and --loss=continuous_dsm. Also an SDE an --extensions module registers '
      '(docs/extending.md).')
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
  """The optimisation, the training loop and its devices (ncsn_tf/training/loop.py)."""
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
      'example\'s noise level; uniform over the ladder (the paper; log-uniform σ for '
      'continuous_dsm), or log σ ~ N(--level_log_mean, --level_log_std²) over it (EDM; '
      'continuous_dsm: the VE SDE only, truncated to its σ range).', choices=LEVEL_SAMPLINGS)
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
  edm_weighting: bool = setting(
      False, '--loss=continuous_dsm with --preconditioning=edm: weight ‖D − x‖² by EDM\'s '
      'λ(σ) = (σ² + σ_d²)/(σ·σ_d)² (Karras et al. 2022), the network output\'s unit '
      'weight at every σ, instead of σ².')


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """The sampler and its settings, and inpainting (ncsn_tf/sampling/); all resume-safe."""
  sampler: str = setting(
      'ald', 'ald (annealed Langevin on the ladder, the paper), pc (predictor-corrector), '
      'ode (probability-flow ODE, adaptive), heun (EDM, Karras et al. 2022), dpm_solver '
      '(DPM-Solver++, Lu et al. 2022), edm_stochastic (EDM Algorithm 2) or adaptive_sde '
      '(Jolicoeur-Martineau et al. 2021); all but ald need --sde. Every registered sampler: '
      'docs/sde.md.', resume_safe=True)
  predictor: str = setting('reverse_diffusion', '--sampler=pc: the predictor.',
                           choices=PREDICTORS, resume_safe=True)
  corrector: str = setting('langevin', '--sampler=pc: the corrector.', choices=CORRECTORS,
                           resume_safe=True)
  snr: float = setting(0.16, '--sampler=pc, corrector langevin or ald: the signal-to-noise '
                       'ratio r that sets the step (Song et al. 2021: 0.16 for VE).',
                       resume_safe=True)
  sampling_steps: int = setting(1000, '--sampler=pc: N, the time steps (Song et al. 2021: '
                                '1000); heun, edm_stochastic: the σ steps (2N − 1 score '
                                'evaluations); dpm_solver: the σ steps (N evaluations).',
                                resume_safe=True)
  corrector_steps: int = setting(1, '--sampler=pc: corrector steps after each predictor step.',
                                 resume_safe=True)
  ode_rtol: float = setting(1e-5, '--sampler=ode: the solver\'s relative tolerance.',
                            resume_safe=True)
  ode_atol: float = setting(1e-5, '--sampler=ode: the solver\'s absolute tolerance.',
                            resume_safe=True)
  sampling_eps: float = setting(1e-3, 'SDE samplers end at t = ε, in (0, 1) (Song et al. '
                                '2021: 1e-3 for VP, 1e-5 for VE).', resume_safe=True)
  solver_order: int = setting(
      2, '--sampler=dpm_solver: 1 (DDIM), 2 (DPM-Solver++ 2M, the paper\'s) or 3 (3M; below '
      '~15 steps use 2). A condition with --condition_method=langevin steps at order 1.',
      choices=SOLVER_ORDERS, resume_safe=True)
  sigma_schedule: str = setting(
      'logsnr', '--sampler=dpm_solver: the σ steps, uniform in log σ (logsnr, the paper\'s), '
      'EDM\'s ρ = 7 (karras) or uniform in t (time_uniform).', choices=SIGMA_SCHEDULES,
      resume_safe=True)
  condition_method: str = setting(
      'langevin', '--sampler=dpm_solver, edm_stochastic, with inpainting or colourisation: '
      'flow (the known coordinates through the score, as heun and ode; biased where the '
      'unknown ones depend on them) or langevin (plus --condition_steps Langevin moves on '
      'the unknown coordinates at every σ step; docs/sde.md, "Conditions").',
      choices=CONDITION_METHODS, resume_safe=True)
  condition_steps: int = setting(
      3, '--condition_method=langevin: Langevin moves per σ step (3 at --condition_snr=0.25 '
      'matched the exact Gaussian conditional; docs/sde.md, "Conditions").', resume_safe=True)
  condition_snr: float = setting(
      0.25, '--condition_method=langevin: r of the moves\' step ε = 2 (r ‖z‖/‖s‖)², over the '
      'unknown coordinates.', resume_safe=True)
  s_churn: float = setting(
      0.0, '--sampler=edm_stochastic: S_churn >= 0, the total churn (Karras et al. 2022, '
      'Algorithm 2; 0 is Heun).', resume_safe=True)
  s_tmin: float = setting(0.0, '--sampler=edm_stochastic: the smallest σ that churns (S_tmin).',
                          resume_safe=True)
  s_tmax: float = setting(float('inf'), '--sampler=edm_stochastic: the largest σ that churns '
                          '(S_tmax; inf: no bound).',
                          resume_safe=True, infinite_ok=True)
  s_noise: float = setting(1.0, '--sampler=edm_stochastic: the churn noise\'s scale S_noise > 0.',
                           resume_safe=True)
  adaptive_atol: float = setting(
      0.0078, '--sampler=adaptive_sde: ε_abs, the absolute tolerance in data units '
      '(Jolicoeur-Martineau et al. 2021: 0.0078).', resume_safe=True)
  adaptive_rtol: float = setting(
      0.01, '--sampler=adaptive_sde: ε_rel, the relative tolerance (the paper: 0.01-0.05).',
      resume_safe=True)
  adaptive_max_nfe: int = setting(
      10_000, '--sampler=adaptive_sde: the most score evaluations; a sampler that reaches it '
      'stops with an error.', resume_safe=True)
  adaptive_step_control: str = setting(
      'batch', '--sampler=adaptive_sde: one step size for the batch (batch) or one per '
      'example (per_example, the paper\'s; biased on low-dimensional data, docs/sde.md).',
      choices=STEP_CONTROLS, resume_safe=True)
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
  """The SavedModel export (ncsn_tf/serving/)."""
  export_dir: str = setting('', 'SavedModel root; default saved_models/<config name>.',
                            resume_safe=True, derived=os.path.join('saved_models', '{name}'))
  max_batch: int = setting(
      1024, 'The most examples one served request may ask for (num_samples, or N of x, images '
      'or labels); a larger request fails with InvalidArgument instead of allocating without '
      'bound. Stored in the export (the variable max_batch).', flag='export_max_batch',
      resume_safe=True)
  signatures: str = setting(
      '', 'Comma-separated signatures to serve, e.g. score,sample (a smaller, faster export); '
      'empty: every signature that applies to the run (saved_models/README.md). score is '
      'always served: it is serving_default.', flag='export_signatures', resume_safe=True)

  @property
  def signature_names(self) -> tuple:
    """--export_signatures as names, in the order given; () means all that apply."""
    return tuple(name.strip() for name in self.signatures.split(',') if name.strip())


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Sample quality (ncsn_tf/evaluation/images.py, docs/evaluation.md) and likelihoods
  (ncsn_tf/evaluation/likelihood.py); all resume-safe: they choose what is measured, not the model."""
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
      4, '--mode=likelihood and the export, images (and toys with --exact_trace=false): '
      'Hutchinson-Skilling probes per example for the divergence, each drawn once and held '
      'fixed over the solve (Song et al. 2021 use 1); their spread gives each example\'s '
      'standard error (needs >= 2).', resume_safe=True)
  probe: str = setting('rademacher', '--mode=likelihood: the probes\' distribution.',
                       choices=HUTCHINSON_PROBES, resume_safe=True)
  exact_trace: bool = setting(
      True, '--mode=likelihood and the export, toys: the exact divergence by autodiff (one '
      'backward pass per dimension); false: the Hutchinson estimate. Images always use '
      '--hutchinson_probes.', resume_safe=True)
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
      'train', '; '.join(f'{mode}: {what}' for mode, what in MODE_HELP.items()) + '.',
      choices=MODES, enum=True, resume_safe=True)
  seed: int = setting(0, 'Global seed: data, noise levels, Langevin noise.')
  experiment: str = setting('all', 'With --mode=experiment: the score-matching lab figure/table to '
                            'make (sampler_sweep: the samplers on a trained image run).',
                            choices=EXPERIMENTS, enum=True, resume_safe=True)
  extensions: str = setting(
      '', 'Comma-separated Python modules (import names, or paths to .py files) imported '
      'before the configuration is checked: they register datasets, samplers, SDEs, networks '
      'or served signatures (docs/extending.md).', resume_safe=True)
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
