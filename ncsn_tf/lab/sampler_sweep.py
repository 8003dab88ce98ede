"""`--experiment=sampler_sweep`: every sampler at a few budgets on a trained image run, judged clean.

On an image workdir with a trained continuous-σ model (tf_configs/digits.cfg,
shapes_sde.cfg), restores the latest checkpoint (it never trains: train first
with a fixed --train_steps) and draws --num_samples unconditional samples,
in batches of --sample_batch_size, with each row of `sweep_grid`:

- the fast samplers at about NFE_TARGETS score evaluations (at most each
  target): Heun (N = ⌊(n + 1)/2⌋ steps, 2N − 1 NFE), DPM-Solver++ 2M and 3M
  (n steps, n NFE), EDM's stochastic sampler (Heun's steps with churn);
- the references: annealed Langevin (the paper, 1000 NFE) with two seeds,
  for the run-to-run spread; PC (reverse diffusion + Langevin, 1000 steps,
  2000 NFE); the adaptive SDE solver at rtol 0.05, one step for the batch and
  one per example; the ODE at rtol 1e-3.

Every row starts from the same seed (the deterministic samplers from the same
prior draws), so differences between rows are paired. Each row is judged by
the dataset's clean judge (evaluation/judges.py `judge_scores`: digits the
Inception-Score analogue and Fréchet distance of the clean classifier, shapes
the share of clean objects with its standard error). Seconds per image are
the wall time of every batch but the first (which traces the sampler) over
its images; on a shared CPU they are noisy, so compare them within one table.

Writes <workdir>/figures/sampler_sweep.md (the table), sampler_sweep.png
(quality against NFE), sampler_sweep/<row>.png (the first 64 samples of each
row) and metrics['sampler_sweep'].
"""

import os
import re
import time

import numpy as np
from absl import logging

from ncsn_tf import catalog
from ncsn_tf import config as config_lib
from ncsn_tf import noise
from ncsn_tf import plots
from ncsn_tf.data import digits
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.data import shapes
from ncsn_tf.evaluation import judges
from ncsn_tf.runtime import artifacts
from ncsn_tf.runtime import checkpoints
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import samplers

#: The budgets of the fast samplers (score evaluations per sample, at most each).
NFE_TARGETS = (10, 20, 35, 50, 100)
#: EDM's churn in the sweep: γ = S_churn/N per step on the σ range below, EDM's
#: stochastic setting scaled to data in [0, 1] (its σ range was for [−1, 1]: halved).
SWEEP_CHURN_PER_STEP = 0.2
SWEEP_CHURN_SIGMAS = (0.025, 25.0)
#: The adaptive solver's relative tolerance: the paper's faster setting (its range: 0.01-0.05).
ADAPTIVE_RTOL = 0.05
#: Images of each row saved as a grid.
GRID_IMAGES = 64
#: Added to --seed for annealed Langevin's second run (its run-to-run spread).
SECOND_SEED_OFFSET = 1


def heun_steps(nfe: int) -> int:
  """Heun's N for at most `nfe` evaluations: 2N − 1 <= nfe."""
  return max(2, (nfe + 1) // 2)


def sweep_grid(nfe_targets=NFE_TARGETS) -> list:
  """[(family, label, sampling overrides, seed offset)]: the fast samplers, then the references."""
  rows = []
  for nfe in nfe_targets:
    steps = heun_steps(nfe)
    rows += [
        ('Heun', f'Heun, {steps} steps', {'sampler': 'heun', 'sampling_steps': steps}, 0),
        ('DPM-Solver++ 2M', f'DPM-Solver++ 2M, {nfe} steps',
         {'sampler': 'dpm_solver', 'solver_order': 2, 'sampling_steps': nfe}, 0),
        ('DPM-Solver++ 3M', f'DPM-Solver++ 3M, {nfe} steps',
         {'sampler': 'dpm_solver', 'solver_order': 3, 'sampling_steps': nfe}, 0),
        ('EDM stochastic', f'EDM stochastic, {steps} steps',
         {'sampler': 'edm_stochastic', 'sampling_steps': steps,
          's_churn': SWEEP_CHURN_PER_STEP * steps, 's_tmin': SWEEP_CHURN_SIGMAS[0],
          's_tmax': SWEEP_CHURN_SIGMAS[1]}, 0)]
  rows += [(None, 'annealed Langevin', {'sampler': 'ald'}, 0),
           (None, 'annealed Langevin, 2nd seed', {'sampler': 'ald'}, SECOND_SEED_OFFSET),
           (None, 'PC (reverse diffusion + Langevin), 1000 steps',
            {'sampler': 'pc', 'predictor': 'reverse_diffusion', 'corrector': 'langevin',
             'sampling_steps': 1000}, 0)]
  rows += [(None, f'adaptive SDE, rtol {ADAPTIVE_RTOL:g}, {control.replace("_", " ")} steps',
            {'sampler': 'adaptive_sde', 'adaptive_rtol': ADAPTIVE_RTOL,
             'adaptive_step_control': control}, 0) for control in ('batch', 'per_example')]
  rows.append((None, 'ODE, rtol 1e-3', {'sampler': 'ode', 'ode_rtol': 1e-3, 'ode_atol': 1e-3}, 0))
  return rows


def check_run(config: config_lib.Config) -> None:
  """An image run with a judge and a continuous-σ model; ConfigError naming the flag if not."""
  if config.data.is_toy or catalog.get(config.data.dataset).judge is None:
    raise config_lib.ConfigError(
        '--experiment: sampler_sweep needs an image --dataset with a clean judge (digits, '
        'shapes); toys have --experiment=sde_samplers')
  if config.model.noise_embedding != 'fourier':
    raise config_lib.ConfigError('--experiment: sampler_sweep needs a continuous-σ run '
                                 '(e.g. --flagfile=tf_configs/digits.cfg)')


def _draw(config: config_lib.Config, score_model, sigmas, seed: int) -> tuple:
  """(images float32 [N, ...] in [0, 1], nfe per sample, seconds per image after the first batch)."""
  shape = data_lib.data_shape(config.data)
  s = config.sampling
  sampler = configured.ConfiguredSampler(config, score_model, shape, sigmas=sigmas)
  sizes = [min(s.sample_batch_size, s.num_samples - start)
           for start in range(0, s.num_samples, s.sample_batch_size)]
  out, timed_seconds, timed_images, nfe = [], 0.0, 0, 0
  for k, size in enumerate(sizes):
    start = time.perf_counter()
    samples, _, nfe = sampler.sample(size, seed, index=k)
    out.append(samples.numpy())
    if k > 0 or len(sizes) == 1:  # The first batch traces the sampler (unless it is alone).
      timed_seconds += time.perf_counter() - start
      timed_images += size
  images = data_lib.to_unit_range(np.concatenate(out), config.data)
  return images, int(nfe), timed_seconds / timed_images


def _slug(label: str) -> str:
  return re.sub(r'[^a-z0-9]+', '_', label.lower()).strip('_')


def _reference_scores(config: config_lib.Config, num: int) -> dict:
  """The judge on real images: what a perfect sampler would score with `num` samples."""
  if catalog.get(config.data.dataset).judge == 'digit_judge':
    test, _ = digits.load_digits_split('test', config.data.image_size)
    train, _ = digits.load_digits_split('train', config.data.image_size)
    rng = np.random.default_rng(config.seed)
    subset = train[rng.choice(len(train), size=min(num, len(train)), replace=False)] / 255.0
    return {'test digits': judges.judge_scores(test / 255.0, config),
            f'{len(subset)} training digits': judges.judge_scores(subset, config)}
  test = shapes.shapes_split_images('test', image_size=config.data.image_size,
                                    num_images=min(num, 256)) / 255.0
  return {'test images': judges.judge_scores(test, config)}


def sampler_sweep(config: config_lib.Config) -> dict:
  """Runs the sweep on the workdir's latest checkpoint; returns {'sampler_sweep': {...}}."""
  check_run(config)
  state = checkpoints.restore_for_inference(config)
  fig_dir = os.path.join(config.workdir, 'figures')
  grid_dir = os.path.join(fig_dir, 'sampler_sweep')
  os.makedirs(grid_dir, exist_ok=True)
  rows = []
  for family, label, overrides, seed_offset in sweep_grid():
    run_config = config.replace(sampling={**overrides, 'guidance': 'none'})
    samplers.check_config(run_config, noise.build_sde(run_config.model))
    images, nfe, seconds = _draw(run_config, state.score_model, state.sigmas,
                                 config.seed + seed_offset)
    scores = judges.judge_scores(images, config)
    plots.save_png(plots.image_grid(images[:GRID_IMAGES]), os.path.join(grid_dir,
                                                                        f'{_slug(label)}.png'))
    row = {'family': family, 'sampler': label, 'settings': samplers.describe(run_config.sampling),
           'seed': config.seed + seed_offset, 'nfe': nfe, 'seconds_per_image': seconds, **scores}
    logging.info('sampler_sweep: %s', row)
    rows.append(row)
  result = {'rows': rows, 'num_samples': config.sampling.num_samples,
            'step': int(state.step.numpy()), 'data': _reference_scores(config,
                                                                        config.sampling.num_samples)}
  table = sweep_table(result, config)
  artifacts.write_text(os.path.join(fig_dir, 'sampler_sweep.md'), table)
  print(table)
  plots.save_figure(sweep_figure(result, config), os.path.join(fig_dir, 'sampler_sweep.png'))
  return {'sampler_sweep': result}


def _metrics(config: config_lib.Config) -> list:
  """[(key, column title, format)] of the judge's numbers in the table and figure."""
  if catalog.get(config.data.dataset).judge == 'digit_judge':
    return [('inception_score', 'IS analogue', '.2f'), ('frechet_distance', 'Fréchet', '.2f')]
  return [('fit_rate', 'clean objects', '.0%')]


def sweep_table(result: dict, config: config_lib.Config) -> str:
  """The markdown table: one row per sampler (NFE, judge's numbers, seconds per image), then the data."""
  metrics = _metrics(config)
  head = ['sampler', 'NFE'] + [title for _, title, _ in metrics] + ['s / image']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]

  def cells(scores):
    out = []
    for key, _, fmt in metrics:
      text = format(scores[key], fmt)
      if key == 'fit_rate':
        text += f' ± {100 * scores["fit_rate_stderr"]:.0f} ({scores["objects"]} objects)'
      out.append(text)
    return out

  for row in result['rows']:
    lines.append('| ' + ' | '.join([row['sampler'], str(row['nfe'])] + cells(row)
                                   + [f'{row["seconds_per_image"]:.3f}']) + ' |')
  for name, scores in result['data'].items():
    lines.append('| ' + ' | '.join([f'real {name}', '–'] + cells(scores) + ['–']) + ' |')
  return '\n'.join(lines) + '\n'


def sweep_figure(result: dict, config: config_lib.Config):
  """The judge's first number against NFE: a line per fast family, the references as levels."""
  key, title, _ = _metrics(config)[0]
  err_key = 'fit_rate_stderr' if key == 'fit_rate' else None
  series, references = {}, {}
  for row in result['rows']:
    err = row[err_key] if err_key else None
    if row['family']:
      nfes, values, errors = series.setdefault(row['family'], ([], [], [] if err_key else None))
      nfes.append(row['nfe'])
      values.append(row[key])
      if err_key:
        errors.append(err)
    else:
      references[f'{row["sampler"]} ({row["nfe"]} NFE)'] = (row['nfe'], row[key], err)
  return plots.quality_vs_nfe_figure(
      series, references, title,
      f'{config.data.dataset}, step {result["step"]}, {result["num_samples"]} samples per point')
