"""The score-matching lab: `--mode=experiment`, figures and tables on toys with exact scores.

`--experiment=` picks one product (each writes <workdir>/figures/<name>.png and
merges its numbers into <workdir>/metrics.json; `all` makes every one):

objectives    trains every objective of `losses.LOSSES` with the one trainer
              (single-σ ones an unconditional MLP, the annealed ones the
              noise-conditional MLP) and writes, per objective,
              objective_<loss>.png (exact | estimated | difference), then
              score_error_vs_density.png (score error per decile of the data
              density) with the lowest- and highest-density deciles in metrics.
trajectories  a few particles of Langevin (exact score), MALA (exact density)
              and annealed Langevin (learned network) over the true vector field.
samplers      exact density | MALA with the exact score | annealed Langevin with
              the learned network, with MMD and sliced Wasserstein to the truth.
sde_samplers  continuous-σ runs only (lab/sde_samplers.py): annealed Langevin, PC,
              reverse diffusion, Euler-Maruyama, the ODE, Heun and the fast samplers,
              exact and learned score: NFE, seconds, mixture weights, MMD, sliced
              Wasserstein.
sampler_sweep image runs only (lab/sampler_sweep.py): every sampler at a few NFE
              budgets on the workdir's trained model, judged by the dataset's clean
              judge: a quality-vs-NFE table and figure. Not part of `all`.
weights       mixtures only: the share of samples at each mode for plain
              Langevin, MALA, annealed Langevin with exact and learned scores,
              against the true weights (weights.png, weights.md, metrics).

Trained networks live in <workdir>/objectives/<loss>/ (checkpoints): running
again restores instead of retraining. What each estimated score is compared
with: ∇log p for ESM/ISM/SSM/SSM-VR; ∇log p_σ for single-σ DSM (σ =
`DSM_SIGMA`) and for the annealed objectives at σ_L, in closed form where the
toy has one (`has_perturbed_score`), otherwise (banana) a Monte Carlo
estimate (`toy.perturbed_score_mc`).
"""

import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import losses
from ncsn_tf import plots
from ncsn_tf.data import toy
from ncsn_tf.lab import sampler_sweep as experiments_sweep
from ncsn_tf.lab import sde_samplers as experiments_sde
from ncsn_tf.metrics import toy as toy_metrics
from ncsn_tf.runtime import artifacts
from ncsn_tf.sampling import langevin
from ncsn_tf.sampling import mala as mala_lib
from ncsn_tf.training import loop as train_loop

#: Every objective of the lab, in the order of the figures and tables.
OBJECTIVES = ('esm', 'ism', 'ssm', 'ssm_vr', 'dsm', 'anneal_dsm', 'anneal_ssm')
#: σ of single-σ DSM: small, so its target ∇log p_σ is close to ∇log p.
DSM_SIGMA = 0.1
#: The learned network used by the samplers (the paper's objective).
SAMPLER_OBJECTIVE = 'anneal_dsm'
#: Gaussian-kernel bandwidth h of the reported MMD, k(a, b) = exp(−‖a−b‖²/(2h²)).
MMD_BANDWIDTH = 1.0
#: Samples compared by MMD (O(N²) memory) and by sliced Wasserstein.
NUM_METRIC_SAMPLES = 2000
NUM_EVAL_POINTS = 4096
NUM_MC_PRIOR = 16384
#: Below this σ the Monte Carlo perturbed score has too few effective draws; without a
#: closed form, single-σ DSM is then compared with ∇log p itself (≈ ∇log p_σ for small σ).
MC_MIN_SIGMA = 0.3
NUM_PARTICLES = 4
FIELD_GRID = 21
DENSITY_GRID = 120


def _learned(model, level):
  return lambda x: model(x, tf.fill([tf.shape(x)[0]], level))


class Lab:
  """One toy distribution, its trained networks and its sample sets, built lazily."""

  def __init__(self, config: config_lib.Config):
    self.config = config
    self.dist = toy.get_toy(config.data.dataset)
    self.fig_dir = os.path.join(config.workdir, 'figures')
    os.makedirs(self.fig_dir, exist_ok=True)
    self._trained = {}
    self._samples = None
    self.metrics = artifacts.read_metrics(config.workdir)
    self.metrics.update({'dataset': self.dist.name,
                         'has_perturbed_score': self.dist.has_perturbed_score})

  # --- networks ---------------------------------------------------------------

  def objective_config(self, loss: str) -> config_lib.Config:
    model = {}
    if loss in losses.SINGLE_SIGMA_LOSSES:
      model = {'num_scales': 1, 'sigma_begin': DSM_SIGMA, 'sigma_end': DSM_SIGMA,
               'scale_by_sigma': False}
    return self.config.replace(workdir=os.path.join(self.config.workdir, 'objectives', loss),
                               mode='train', train={'loss': loss}, model=model)

  def trained(self, loss: str):
    """(score model, sigmas [L], train seconds) for `loss`; trains or restores."""
    if loss not in self._trained:
      start = time.time()
      state = train_loop.train(self.objective_config(loss))
      # The EMA network, or the network itself without EMA (TrainState.score_model's choice).
      model = state.score_model.network
      self._trained[loss] = (model, np.asarray(state.sigmas, np.float32), time.time() - start)
    return self._trained[loss]

  # --- targets ----------------------------------------------------------------

  def perturbed_score(self, x, sigma: float):
    """∇log p_σ(x): closed form, or the Monte Carlo estimate in chunks."""
    if self.dist.has_perturbed_score:
      return self.dist.perturbed_score(x, sigma).numpy()
    x = np.asarray(x, np.float32)
    return np.concatenate([toy.perturbed_score_mc(self.dist, x[k:k + 256], sigma,
                                                  num=NUM_MC_PRIOR, seed=[self.config.seed, 99]
                                                  ).numpy() for k in range(0, len(x), 256)])

  def target_and_estimate(self, loss: str, x):
    """(what the objective estimates, the network's estimate, a label), both [N, D]."""
    model, sigmas, _ = self.trained(loss)
    level = len(sigmas) - 1
    estimate = _learned(model, level)(tf.constant(x, tf.float32)).numpy()
    sigma = float(sigmas[level])
    if loss == 'dsm' and not self.dist.has_perturbed_score and sigma < MC_MIN_SIGMA:
      return self.dist.score(x).numpy(), estimate, f'∇log p (σ = {sigma:.3g}: no closed form)'
    if loss in ('dsm', 'anneal_dsm', 'anneal_ssm'):
      how = 'closed form' if self.dist.has_perturbed_score else 'Monte Carlo'
      return self.perturbed_score(x, sigma), estimate, f'∇log p_σ, σ = {sigma:.3g} ({how})'
    return self.dist.score(x).numpy(), estimate, '∇log p'

  # --- samples ----------------------------------------------------------------

  def samples(self) -> dict:
    """Sample sets [N, D] from a uniform start on the plot square, plus MALA's acceptance."""
    if self._samples is not None:
      return self._samples
    s, seed, dist = self.config.sampling, self.config.seed, self.dist
    model, sigmas, _ = self.trained(SAMPLER_OBJECTIVE)
    sigmas_t = tf.constant(sigmas)
    x_init = tf.random.stateless_uniform([s.num_samples, dist.dim], [seed, 31],
                                         -dist.plot_radius, dist.plot_radius)
    total_steps = len(sigmas) * s.n_steps_each
    common = dict(n_steps_each=s.n_steps_each, step_lr=s.step_lr, denoise=s.denoise)
    mala_out = mala_lib.mala(dist.log_prob, x_init, step_size=s.step_lr, n_steps=total_steps,
                             seed=[seed, 32])
    out = {
        'langevin_exact': langevin.langevin_dynamics(dist.score, x_init, step_size=s.step_lr,
                                                     n_steps=total_steps, seed=[seed, 33]),
        'mala_exact': mala_out['samples'],
        'annealed_learned': langevin.annealed_langevin_dynamics(
            lambda x, i: model(x, i), x_init, sigmas_t, seed=[seed, 34], **common),
    }
    if dist.has_perturbed_score:
      out['annealed_exact'] = langevin.annealed_langevin_dynamics(
          lambda x, i: dist.perturbed_score(x, tf.gather(sigmas_t, i)), x_init, sigmas_t,
          seed=[seed, 35], **common)
    self._samples = {k: v.numpy() for k, v in out.items()}
    self._samples['true'] = dist.sample(s.num_samples, seed=[seed, 36]).numpy()
    self.metrics['mala_acceptance_rate'] = float(mala_out['acceptance_rate'])
    self.metrics['mala_step_size'] = s.step_lr
    return self._samples

  def save(self, name: str, fig):
    plots.save_figure(fig, os.path.join(self.fig_dir, f'{name}.png'))

  def write_metrics(self):
    artifacts.write_metrics(self.config.workdir, self.metrics)


# --- the experiments ------------------------------------------------------------

def objectives(lab: Lab) -> dict:
  dist, radius = lab.dist, lab.dist.plot_radius
  points = plots.grid_points(radius, FIELD_GRID)
  density = np.exp(dist.log_prob(plots.grid_points(radius, DENSITY_GRID)).numpy())
  # Error against the density: uniform points on the square, so low-density
  # regions are as well represented as the modes.
  uniform = tf.random.stateless_uniform([NUM_EVAL_POINTS, dist.dim], [lab.config.seed, 41],
                                        -radius, radius).numpy()
  log_density = dist.log_prob(uniform).numpy()
  on_data = dist.sample(NUM_EVAL_POINTS, seed=[lab.config.seed, 42]).numpy()
  results, deciles = {}, {}
  for loss in OBJECTIVES:
    target, estimate, label = lab.target_and_estimate(loss, points)
    lab.save(f'objective_{loss}', plots.score_field_figure(
        points, target, estimate, density, radius, f'{loss}: exact {label} vs estimated'))
    target_u, estimate_u, _ = lab.target_and_estimate(loss, uniform)
    deciles[loss] = toy_metrics.error_by_density_decile(estimate_u, target_u, log_density)
    target_d, estimate_d, _ = lab.target_and_estimate(loss, on_data)
    _, sigmas, seconds = lab.trained(loss)
    results[loss] = {
        'target': label,
        'fisher_divergence_on_data': toy_metrics.fisher_divergence(estimate_d, target_d),
        'relative_error_on_data': toy_metrics.relative_score_error(estimate_d, target_d),
        'sq_error_lowest_density_decile': float(deciles[loss][0]),
        'sq_error_highest_density_decile': float(deciles[loss][-1]),
        'train_seconds': round(seconds, 1),
    }
    if len(sigmas) > 1 and dist.has_perturbed_score:
      model = lab.trained(loss)[0]
      per_sigma = toy_metrics.per_sigma_score_errors(model, dist, sigmas, num=NUM_EVAL_POINTS,
                                                     seed=lab.config.seed + 43)
      results[loss]['fisher_divergence_per_sigma'] = per_sigma['fisher']
      results[loss]['fisher_divergence_overall'] = toy_metrics.fisher_divergence_overall(
          per_sigma['fisher'], sigmas)
  lab.save('score_error_vs_density', _decile_figure(deciles))
  return {'objectives': results}


def _decile_figure(deciles: dict):
  fig, ax = plots.plt.subplots(figsize=(6, 3.8))
  for loss, values in deciles.items():
    ax.plot(np.arange(1, 11), values, marker='o', label=loss)
  ax.set_yscale('log')
  ax.set_xlabel('decile of the data density p(x) (1: lowest)')
  ax.set_ylabel('mean ‖estimate − exact‖²')
  ax.set_title('score error vs data density (uniform points on the plot square)')
  ax.legend(fontsize=7, ncol=2)
  return fig


def trajectories(lab: Lab) -> dict:
  dist, s, seed = lab.dist, lab.config.sampling, lab.config.seed
  model, sigmas, _ = lab.trained(SAMPLER_OBJECTIVE)
  radius = dist.plot_radius
  angles = 2 * np.pi * (np.arange(NUM_PARTICLES) + 0.5) / NUM_PARTICLES
  x0 = (0.85 * radius * np.stack([np.cos(angles), np.sin(angles)], -1)).astype(np.float32)
  total_steps = len(sigmas) * s.n_steps_each
  snapshots = min(total_steps, 100)
  # Plain Langevin has no snapshot option: run it in equal chunks.
  chunk = max(total_steps // snapshots, 1)
  x, plain = tf.constant(x0), [x0]
  score_fn = dist.score  # One callable for every chunk: no retracing.
  for k in range(snapshots):
    x = langevin.langevin_dynamics(score_fn, x, step_size=s.step_lr, n_steps=chunk,
                                   seed=tf.constant([seed, 500 + k]))
    plain.append(x.numpy())
  paths = {'Langevin, exact score': np.stack(plain)}
  mala_out = mala_lib.mala(dist.log_prob, x0, step_size=s.step_lr, n_steps=total_steps,
                           seed=[seed, 51], num_snapshots=snapshots)
  paths['MALA, exact density'] = np.concatenate([x0[None], mala_out['trajectory'].numpy()])
  _, annealed = langevin.annealed_langevin_dynamics(
      lambda x, i: model(x, i), x0, tf.constant(sigmas), n_steps_each=s.n_steps_each,
      step_lr=s.step_lr, seed=[seed, 52], num_snapshots=snapshots, denoise=s.denoise)
  paths['annealed Langevin, learned'] = np.concatenate([x0[None], annealed.numpy()])
  points = plots.grid_points(radius, FIELD_GRID)
  field = dist.score(points).numpy()
  field /= np.maximum(np.linalg.norm(field, axis=-1, keepdims=True), 1e-6)
  fig, axes = plots.plt.subplots(1, len(paths), figsize=(4.2 * len(paths), 4.3))
  for ax, (name, path) in zip(axes, paths.items()):
    ax.quiver(points[:, 0], points[:, 1], field[:, 0], field[:, 1], color='0.6',
              angles='xy', width=0.003)
    for p in range(NUM_PARTICLES):
      ax.plot(path[:, p, 0], path[:, p, 1], lw=0.6, alpha=0.8)
      ax.plot(*path[0, p], 'k^', ms=4)
      ax.plot(*path[-1, p], 'ro', ms=4)
    ax.set_xlim(-radius, radius)
    ax.set_ylim(-radius, radius)
    ax.set_aspect('equal')
    ax.set_title(name, fontsize=10)
  fig.suptitle(f'{NUM_PARTICLES} particles over the true field ∇log p / ‖∇log p‖ '
               f'({total_steps} steps; ▲ start, ● end)')
  lab.save('trajectories', fig)
  return {'trajectories': {'num_particles': NUM_PARTICLES, 'steps': total_steps,
                           'final_positions': {k: v[-1].tolist() for k, v in paths.items()}}}


def _distances(samples: dict) -> dict:
  true = samples['true'][:NUM_METRIC_SAMPLES]
  out = {}
  for name, x in samples.items():
    if name == 'true':
      continue
    x = x[:NUM_METRIC_SAMPLES]
    finite = np.all(np.isfinite(x))
    out[name] = {
        'mmd2_rbf': toy_metrics.mmd_rbf(x, true, MMD_BANDWIDTH) if finite else float('nan'),
        'sliced_wasserstein2': toy_metrics.sliced_wasserstein(x, true) if finite else float('nan')}
  return out


def samplers(lab: Lab) -> dict:
  samples = lab.samples()
  dist, radius = lab.dist, lab.dist.plot_radius
  dense = plots.grid_points(radius, DENSITY_GRID)
  density = np.exp(dist.log_prob(dense).numpy()).reshape(DENSITY_GRID, DENSITY_GRID)
  fig, axes = plots.plt.subplots(1, 3, figsize=(12, 4.2))
  axes[0].imshow(density, origin='lower', extent=[-radius, radius, -radius, radius], cmap='Blues')
  axes[0].set_title('exact density')
  rate = lab.metrics['mala_acceptance_rate']
  for ax, key, name in ((axes[1], 'mala_exact', f'MALA, exact score (accept {rate:.2f})'),
                        (axes[2], 'annealed_learned', 'annealed Langevin, learned network')):
    ax.scatter(samples[key][:, 0], samples[key][:, 1], s=1.0, alpha=0.4)
    ax.set_title(name, fontsize=10)
  for ax in axes:
    ax.set_xlim(-radius, radius)
    ax.set_ylim(-radius, radius)
    ax.set_aspect('equal')
  lab.save('samplers', fig)
  return {'sample_distances': _distances(samples), 'mmd_kernel':
          f'Gaussian exp(-|a-b|^2/(2h^2)), h={MMD_BANDWIDTH}, unbiased MMD^2, '
          f'{NUM_METRIC_SAMPLES} samples; sliced W2 with 512 directions'}


def weights(lab: Lab) -> dict:
  dist = lab.dist
  if not isinstance(dist, toy.GaussianMixture):
    logging.info('weights: %s is not a mixture of Gaussians; no mixture-weight table', dist.name)
    return {}
  samples = {k: v for k, v in lab.samples().items() if k != 'true'}
  shares = {k: toy_metrics.mode_weights(v, dist.means) for k, v in samples.items()}
  errors = {k: toy_metrics.mixture_weight_error(v, dist.means, dist.weights)
            for k, v in samples.items()}
  if dist.num_components <= 4:
    labels = [f'mode at {tuple(np.round(m, 1))}' for m in dist.means]
    lab.save('weights', plots.weights_figure(shares, dist.weights, labels))
  table = _weights_table(shares, errors, dist.weights)
  with open(os.path.join(lab.fig_dir, 'weights.md'), 'w') as f:
    f.write(table)
  print(table)
  return {'mixture_weights': {'true': dist.weights.tolist(),
                              **{k: v.tolist() for k, v in shares.items()}},
          'mixture_weight_error': errors}


def _weights_table(shares, errors, true_weights) -> str:
  k = len(true_weights)
  shown = min(k, 4)
  head = ' | '.join(f'w{j}' for j in range(shown)) + (' | …' if k > shown else '')
  lines = [f'| sampler | {head} | TV error | max abs error |',
           '|' + '---|' * (shown + 3 + (k > shown))]
  fmt = lambda w: ' | '.join(f'{v:.3f}' for v in w[:shown]) + (' | …' if k > shown else '')
  lines.append(f'| true | {fmt(true_weights)} | 0 | 0 |')
  for name, w in shares.items():
    lines.append(f'| {name} | {fmt(w)} | {errors[name]["total_variation"]:.3f} | '
                 f'{errors[name]["max_abs"]:.3f} |')
  return '\n'.join(lines) + '\n'


def sde_samplers(lab: Lab) -> dict:
  return experiments_sde.sde_samplers(lab.config, lab.fig_dir)


EXPERIMENTS = {'objectives': objectives, 'trajectories': trajectories, 'samplers': samplers,
               'weights': weights, 'sde_samplers': sde_samplers}


def run_experiment(config: config_lib.Config) -> dict:
  """Runs `config.experiment` (or all of them) and returns the merged metrics.

  `all` is every experiment that fits the run: sde_samplers for a continuous-σ
  run, the ladder networks' experiments otherwise.
  """
  if config.experiment == 'sampler_sweep':  # An image run: none of the toy lab's machinery.
    metrics = artifacts.read_metrics(config.workdir)
    start = time.time()
    metrics.update(experiments_sweep.sampler_sweep(config))
    metrics.setdefault('experiment_seconds', {})['sampler_sweep'] = round(time.time() - start, 1)
    artifacts.write_metrics(config.workdir, metrics)
    return metrics
  lab = Lab(config)
  continuous = config.model.noise_embedding == 'fourier'
  names = ([n for n in EXPERIMENTS if (n in config_lib.CONTINUOUS_EXPERIMENTS) == continuous
            and n not in config_lib.IMAGE_EXPERIMENTS]
           if config.experiment == 'all' else [config.experiment])
  for name in names:
    start = time.time()
    lab.metrics.update(EXPERIMENTS[name](lab))
    lab.metrics.setdefault('experiment_seconds', {})[name] = round(time.time() - start, 1)
    lab.write_metrics()
    logging.info('experiment %s done in %.1f s', name, time.time() - start)
  return lab.metrics
