"""Evaluation of a toy run against the exact scores: figures and metrics.json.

Writes into <workdir>/figures/:
  score_field_sigma_min.png, score_field_sigma_max.png   exact | learned | error
  samples.png          plain vs annealed Langevin, exact vs learned score
  mixture_weights.png  share of samples at each mode, per sampler (mixtures)
  score_error_per_sigma.png   Fisher divergence and relative error per σ
and <workdir>/metrics.json. The same figures go to TensorBoard as images.
"""

import os

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import plots
from ncsn_tf.data import toy
from ncsn_tf.metrics import toy as toy_metrics
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.runtime import artifacts
from ncsn_tf.runtime.progress import Progress
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import distributed
from ncsn_tf.sampling import langevin
from ncsn_tf.sampling import samplers

_NUM_EVAL_POINTS = 4096


def run_samplers(config: config_lib.Config, dist: toy.ToyDistribution, score_model, sigmas,
                 on_done=None):
  """Four sample sets [N, 2]: {plain, annealed} Langevin x {exact, learned} score.

  Plain Langevin runs as many steps as the annealed chain (L · T) at the
  smallest step ε = step_lr, as in the paper's section 3.2 comparison.
  on_done: None, or fn(name) called after each chain (progress).
  """
  s = config.sampling
  num = s.num_samples
  radius = dist.plot_radius
  sigmas_t = tf.constant(sigmas)
  x_init = tf.random.stateless_uniform([num, dist.dim], [config.seed, 11], -radius, radius)
  last = len(sigmas) - 1
  learned = lambda x, i: score_model(x, i)
  learned_plain = lambda x: score_model(x, tf.fill([tf.shape(x)[0]], last))
  if dist.has_perturbed_score:
    exact = lambda x, i: dist.perturbed_score(x, tf.gather(sigmas_t, i))
  else:  # No closed form for p_σ: anneal the step only, as the official toy code does.
    exact = lambda x, i: dist.score(x)
  total_steps = len(sigmas) * s.n_steps_each
  common = dict(n_steps_each=s.n_steps_each, step_lr=s.step_lr, denoise=s.denoise)
  chains = {
      'langevin_exact': lambda: langevin.langevin_dynamics(
          dist.score, x_init, step_size=s.step_lr, n_steps=total_steps, seed=[config.seed, 12]),
      'langevin_learned': lambda: langevin.langevin_dynamics(
          learned_plain, x_init, step_size=s.step_lr, n_steps=total_steps,
          seed=[config.seed, 13]),
      'annealed_exact': lambda: langevin.annealed_langevin_dynamics(
          exact, x_init, sigmas_t, seed=[config.seed, 14], **common),
      'annealed_learned': lambda: langevin.annealed_langevin_dynamics(
          learned, x_init, sigmas_t, seed=[config.seed, 15], **common),
  }
  samples = {}
  for name, chain in chains.items():
    samples[name] = chain()
    if on_done is not None:
      on_done(name)
  return samples


def _score_field_figures(dist, score_model, sigmas):
  radius = dist.plot_radius
  points = plots.grid_points(radius, 21)
  dense = plots.grid_points(radius, 120)
  figures = {}
  for tag, level in (('sigma_min', len(sigmas) - 1), ('sigma_max', 0)):
    sigma = float(sigmas[level])
    learned = score_model(points, np.full([len(points)], level, np.int32)).numpy()
    if dist.has_perturbed_score:
      exact = dist.perturbed_score(points, sigma).numpy()
      density = np.exp(dist.perturbed_log_prob(dense, sigma).numpy())
      name = f'exact ∇log p_σ vs learned s(x, σ), σ = {sigma:.3g}'
    else:
      exact = dist.score(points).numpy()
      density = np.exp(dist.log_prob(dense).numpy())
      name = f'exact ∇log p vs learned s(x, σ={sigma:.3g})'
    figures[f'score_field_{tag}'] = plots.score_field_figure(points, exact, learned, density,
                                                             radius, name)
  return figures


def configured_samples(config: config_lib.Config, model: ScoreModel, dist, strategy=None) -> tuple:
  """--num_samples samples [N, 2] of the configured --sampler and its NFE per sample.

  strategy: split every score evaluation over its local replicas (sampling/distributed.py).
  """
  sampler = configured.ConfiguredSampler(config, model, (dist.dim,), strategy=strategy)
  samples, _, nfe = sampler.sample(config.sampling.num_samples, config.seed,
                                   index=configured.TOY_FIGURE_BATCH)
  return samples.numpy(), int(nfe)


def evaluate_toy(config: config_lib.Config, score_model, sigmas, *, step: int = 0,
                 writer=None, strategy=None) -> dict:
  """Runs every toy metric and figure for a trained score model; returns metrics.

  score_model: a ScoreModel, or a ladder network s(x, sigma_index). The
  figures ask it at ladder levels; with an SDE sampler (--sampler other than
  ald) its samples join the comparison as '<sampler>_learned', with the
  sampler's NFE in metrics['sampler']. strategy: the four Langevin chains and
  the configured sampler evaluate the score split over its local replicas
  (sampling/distributed.py); the figures and score errors ask it on one device.
  """
  dist = toy.get_toy(config.data.dataset)
  sigmas = np.asarray(sigmas, np.float32)
  model = configured.as_score_model(score_model, sigmas)
  score_model = model.score_index
  fig_dir = os.path.join(config.workdir, 'figures')
  os.makedirs(fig_dir, exist_ok=True)
  metrics = {'step': step, 'dataset': dist.name, 'num_samples': config.sampling.num_samples,
             'sigmas': sigmas.tolist()}

  # Stages, for the progress line: four chains, the configured sampler, the figures and errors.
  stages = 4 + (config.sampling.sampler != 'ald') + 2
  with Progress('toy evaluation', stages) as progress:
    done = [0]

    def advance(stage):
      done[0] += 1
      progress.update(done[0], finished=stage)

    chains_score = distributed.shard(model, strategy).score_index
    samples = {k: v.numpy() for k, v in run_samplers(config, dist, chains_score, sigmas,
                                                     on_done=advance).items()}
    if config.sampling.sampler != 'ald':
      name = config.sampling.sampler
      samples[f'{name}_learned'], nfe = configured_samples(config, model, dist, strategy)
      metrics['sampler'] = {'name': name, 'settings': samplers.describe(config.sampling),
                            'nfe': nfe}
      advance(name)
    figures = _figures_and_errors(config, dist, score_model, sigmas, samples, metrics)
    advance('score errors')
    _write_figures(figures, fig_dir, step, writer)
    advance('figures')
  artifacts.write_metrics(config.workdir, metrics)
  logging.info('toy metrics, step %d: %s; all of them in %s and TensorBoard', step,
               summary_line(metrics), artifacts.metrics_path(config.workdir))
  return metrics


def summary_line(metrics: dict) -> str:
  """The toy metrics in one short line: the learned chain's mixture weights (mixtures) and
  the score error at the smallest σ."""
  parts = []
  weights = metrics.get('mixture_weights', {})
  for key in [k for k in weights if k.endswith('_learned') and k != 'langevin_learned']:
    parts.append(f'{key} weights {"/".join(f"{w:.3f}" for w in weights[key])}')
  if weights:
    parts.append(f'true {"/".join(f"{w:.3f}" for w in weights["true"])}')
  for key in ('relative_score_error_sigma_min', 'relative_score_error_sigma_min_vs_unperturbed'):
    if key in metrics:
      parts.append(f'{key.replace("_", " ")} {metrics[key]:.4f}')
  return '; '.join(parts)


def _figures_and_errors(config, dist, score_model, sigmas, samples, metrics) -> dict:
  """The figures of `evaluate_toy` ({name: figure}); adds the score errors and mixture
  weights to `metrics`."""
  figures = _score_field_figures(dist, score_model, sigmas)
  true_samples = dist.sample(config.sampling.num_samples, seed=[config.seed, 16]).numpy()
  figures['samples'] = plots.samples_figure(
      {'data (i.i.d.)': true_samples,
       'Langevin, exact score': samples['langevin_exact'],
       'Langevin, learned score': samples['langevin_learned'],
       'annealed Langevin, exact': samples['annealed_exact'],
       'annealed Langevin, learned': samples['annealed_learned'],
       **{f'{k.split("_")[0]}, learned': v for k, v in samples.items()
          if k not in ('langevin_exact', 'langevin_learned', 'annealed_exact', 'annealed_learned')}},
      dist.plot_radius)

  if dist.has_perturbed_score:
    errors = toy_metrics.per_sigma_score_errors(score_model, dist, sigmas,
                                                num=_NUM_EVAL_POINTS, seed=config.seed + 17)
    metrics['fisher_divergence_per_sigma'] = errors['fisher']
    metrics['relative_score_error_per_sigma'] = errors['relative']
    metrics['relative_score_error_sigma_min'] = errors['relative'][-1]
    figures['score_error_per_sigma'] = plots.per_sigma_figure(
        sigmas, {'Fisher divergence ½E‖s_θ−∇log p_σ‖²': errors['fisher'],
                 'relative error E‖s_θ−s‖²/E‖s‖²': errors['relative']},
        'error', 'learned vs exact perturbed score, x ~ p_σ')
  else:
    x = dist.sample(_NUM_EVAL_POINTS, seed=[config.seed, 18])
    learned = score_model(x, tf.fill([_NUM_EVAL_POINTS], len(sigmas) - 1))
    # Against the unperturbed score: exact only in the limit σ_L -> 0.
    metrics['relative_score_error_sigma_min_vs_unperturbed'] = \
        toy_metrics.relative_score_error(learned, dist.score(x))

  if isinstance(dist, toy.GaussianMixture):
    weights = {k: toy_metrics.mode_weights(v, dist.means).tolist() for k, v in samples.items()}
    metrics['mixture_weights'] = {'true': dist.weights.tolist(), **weights}
    metrics['mixture_weight_max_abs_error'] = {
        k: float(np.max(np.abs(np.asarray(w) - dist.weights))) for k, w in weights.items()}
    labels = [f'mode at {tuple(np.round(m, 1))}' for m in dist.means]
    figures['mixture_weights'] = plots.weights_figure(weights, dist.weights, labels)
  return figures


def _write_figures(figures: dict, fig_dir: str, step: int, writer):
  """Each figure to <fig_dir>/<name>.png and, with a writer, to TensorBoard (toy/<name>)."""
  for name, fig in figures.items():
    if writer is not None:
      with writer.as_default(step=step):
        tf.summary.image(f'toy/{name}', plots.figure_to_array(fig)[None], step=step)
    plots.save_figure(fig, os.path.join(fig_dir, f'{name}.png'))
  if writer is not None:
    writer.flush()
