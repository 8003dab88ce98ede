"""`--experiment=sde_samplers`: every sampler of the registry on one toy, exact and learned.

For a continuous-σ toy run (tf_configs/toy_gmm_sde.cfg), trains the run's own
model in its workdir (or restores it), then draws --num_samples samples with
each sampler of `SAMPLER_GRID`, once with the exact perturbed score of the
toy (TFP, closed form) and once with the learned network, and reports per
sampler: score evaluations per sample (NFE; the ODE's is the solver's own
count), wall seconds (after a warm-up call on a few samples, so tracing is
not counted), the mixture-weight error, the MMD and the sliced Wasserstein
distance to exact samples. Writes <workdir>/figures/sde_samplers.png (one
scatter per sampler, learned score), sde_samplers.md (the table) and
metrics['sde_samplers'].
"""

import os
import time

import numpy as np
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import plots
from ncsn_tf.data import toy
from ncsn_tf.metrics import toy as toy_metrics
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.runtime import console
from ncsn_tf.runtime import devices
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import samplers
from ncsn_tf.training import loop as train_loop

#: (label, sampling-config overrides): the comparison of the SDE paper's samplers
#: with the paper's annealed Langevin, at the step counts and tolerances of the
#: papers (1000 PC steps; ODE at 1e-3 and 1e-5; Heun at EDM's 18 steps and around it).
SAMPLER_GRID = (
    ('annealed Langevin', {'sampler': 'ald'}),
    ('PC (reverse diffusion + Langevin)', {'sampler': 'pc', 'predictor': 'reverse_diffusion',
                                           'corrector': 'langevin', 'sampling_steps': 1000}),
    ('reverse diffusion', {'sampler': 'pc', 'predictor': 'reverse_diffusion', 'corrector': 'none',
                           'sampling_steps': 1000}),
    ('Euler-Maruyama', {'sampler': 'pc', 'predictor': 'euler_maruyama', 'corrector': 'none',
                        'sampling_steps': 1000}),
    ('ODE, rtol 1e-3', {'sampler': 'ode', 'ode_rtol': 1e-3, 'ode_atol': 1e-3}),
    ('ODE, rtol 1e-5', {'sampler': 'ode', 'ode_rtol': 1e-5, 'ode_atol': 1e-5}),
    ('Heun, 10 steps', {'sampler': 'heun', 'sampling_steps': 10}),
    ('Heun, 18 steps', {'sampler': 'heun', 'sampling_steps': 18}),
    ('Heun, 35 steps', {'sampler': 'heun', 'sampling_steps': 35}),
)
#: Samples compared by MMD (O(N²) memory) and sliced Wasserstein.
NUM_METRIC_SAMPLES = 2000
MMD_BANDWIDTH = 1.0
WARMUP_SAMPLES = 8


def exact_network(dist: toy.ToyDistribution):
  """The toy's exact score of p_σ as a continuous network s(x, σ [N])."""
  if not dist.has_perturbed_score:
    raise ValueError(f'{dist.name} has no closed-form perturbed score; sde_samplers needs one')
  return lambda x, sigma: dist.perturbed_score(x, sigma)


def _timed_draw(config: config_lib.Config, model: ScoreModel, dim: int, seed: int,
                index: int) -> tuple:
  """(samples [N, dim], nfe, seconds) of the configured sampler, tracing excluded.

  The score is evaluated on the run's devices (sampling/distributed.py).
  """
  sampler = configured.ConfiguredSampler(config, model, (dim,),
                                         strategy=devices.strategy_for(config))
  sampler.sample(WARMUP_SAMPLES, seed, index=index)  # Traces the chain.
  start = time.perf_counter()
  samples, _, nfe = sampler.sample(config.sampling.num_samples, seed, index=index)
  samples = samples.numpy()
  return samples, int(nfe), time.perf_counter() - start


def _quality(samples, true_samples, dist) -> dict:
  num = min(len(samples), len(true_samples))  # The distances compare equal counts.
  x, true_samples = samples[:num], true_samples[:num]
  finite = bool(np.all(np.isfinite(samples)))
  out = {'finite': finite,
         'mmd2_rbf': toy_metrics.mmd_rbf(x, true_samples, MMD_BANDWIDTH) if finite else None,
         'sliced_wasserstein2': toy_metrics.sliced_wasserstein(x, true_samples) if finite else None}
  if isinstance(dist, toy.GaussianMixture):
    weights = toy_metrics.mode_weights(np.nan_to_num(samples), dist.means)
    out['mixture_weights'] = weights.tolist()
    out['mixture_weight_max_abs_error'] = float(np.max(np.abs(weights - dist.weights)))
  return out


def sde_samplers(config: config_lib.Config, fig_dir: str) -> dict:
  """Runs the comparison; returns {'sde_samplers': {...}} for metrics.json."""
  if config.model.noise_embedding != 'fourier':
    raise config_lib.ConfigError('--experiment: sde_samplers needs a continuous-σ run '
                                 '(e.g. --flagfile=tf_configs/toy_gmm_sde.cfg)')
  dist = toy.get_toy(config.data.dataset)
  state = train_loop.train(config.replace(mode='train'))
  models = {'exact': ScoreModel(exact_network(dist), state.sigmas, continuous=True),
            'learned': state.score_model}
  true_samples = dist.sample(NUM_METRIC_SAMPLES, seed=[config.seed, 41]).numpy()
  rows, learned_samples = [], {}
  # Every row is a sampler of its own settings, a graph of its own: TensorFlow's
  # warning that a function was traced again is expected here, not a defect.
  with console.expected_retracing():
    for k, (label, overrides) in enumerate(SAMPLER_GRID):
      run_config = config.replace(sampling=overrides)
      row = {'sampler': label, 'settings': samplers.describe(run_config.sampling)}
      for score, model in models.items():
        samples, nfe, seconds = _timed_draw(run_config, model, dist.dim, config.seed, 50 + k)
        row[score] = {'nfe': nfe, 'seconds': round(seconds, 2),
                      **_quality(samples, true_samples, dist)}
        if score == 'learned':
          learned_samples[label] = samples
      learned = row['learned']
      logging.info('sde_samplers %d/%d: %s, %d NFE, %.2f s; learned score: MMD² %s, sliced '
                   'W₂ %s', k + 1, len(SAMPLER_GRID), label, learned['nfe'],
                   learned['seconds'], _cell(learned, 'mmd2_rbf', '.4f'),
                   _cell(learned, 'sliced_wasserstein2', '.3f'))
      rows.append(row)
  table = samples_table(rows, dist)
  with open(os.path.join(fig_dir, 'sde_samplers.md'), 'w') as f:
    f.write(table)
  print(table)
  panels = {f'{label}\n({row["learned"]["nfe"]} NFE)': learned_samples[label]
            for label, row in zip(learned_samples, rows)}
  plots.save_figure(plots.samples_figure(panels, dist.plot_radius, 'learned score, by sampler'),
                    os.path.join(fig_dir, 'sde_samplers.png'))
  return {'sde_samplers': {'rows': rows, 'num_samples': config.sampling.num_samples,
                           'true_weights': getattr(dist, 'weights', np.zeros(0)).tolist(),
                           'mmd_kernel': f'Gaussian, h={MMD_BANDWIDTH}, unbiased MMD^2, '
                                         f'{NUM_METRIC_SAMPLES} samples'}}


def _cell(entry: dict, key: str, fmt: str) -> str:
  value = entry.get(key)
  return '–' if value is None else format(value, fmt)


def samples_table(rows, dist) -> str:
  """The markdown table of `sde_samplers` rows."""
  mixture = isinstance(dist, toy.GaussianMixture)
  head = ['sampler', 'NFE', 'seconds']
  for score in ('exact', 'learned'):
    if mixture:
      head.append(f'w₀ {score} (true {dist.weights[0]:.2f})')
    head += [f'MMD² {score}', f'sliced W₂ {score}']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in rows:
    cells = [row['sampler'], str(row['learned']['nfe']), f'{row["learned"]["seconds"]:.2f}']
    for score in ('exact', 'learned'):
      entry = row[score]
      if mixture:
        cells.append(f'{entry["mixture_weights"][0]:.3f}')
      cells += [_cell(entry, 'mmd2_rbf', '.4f'), _cell(entry, 'sliced_wasserstein2', '.3f')]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'
