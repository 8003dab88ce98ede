"""`--mode=likelihood`: the model's exact log-likelihood over data or its own samples.

For each checkpoint of --eval_checkpoints, scores --likelihood_examples
examples by the probability-flow ODE (ncsn_tf/likelihood.py), in batches of
--eval_batch_size, and writes a result directory named for the settings and
the step, <workdir>/likelihood/<name>/ (`result_name`; likelihood/latest points
to the newest), the same result into <workdir>/metrics.json (key 'likelihood',
by name) and TensorBoard (eval/likelihood_*):

- toys: the mean negative log-likelihood in nats with its standard error
  (by default with the exact divergence, --exact_trace), and its correlation
  with the exact value over the points,
  beside the same points' exact values from TFP: −log p_data (the true
  mixture's entropy, estimated on the same points) and −log p_σ(ε), the data
  perturbed to the model's smallest noise level, which is the density the
  model's ODE defines;
- images: bits per dimension in 8-bit pixel units (docs/likelihood.md has the
  formula) averaged over --likelihood_repeats dequantisation draws, beside two
  baselines computed in the same run: the full-covariance Gaussian fitted to
  the training split, and the uniform density (8 bits/dim).

Also the mean of the examples' own standard errors (the Hutchinson estimate's,
from the spread of its --hutchinson_probes probes; 0 for the exact trace), the
NFE per batch and the seconds per example.
"""

import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import likelihood
from ncsn_tf import noise
from ncsn_tf.data import images as images_lib
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.data import toy
from ncsn_tf.evaluation import images as image_eval
from ncsn_tf.evaluation import results
from ncsn_tf.runtime import artifacts
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime.progress import Progress
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import draw

#: Seeds of the toy evaluation points and of the dequantisation (apart from training's).
#: Batch k's Hutchinson probes come from [--seed, k], as the export's `log_likelihood`
#: draws them from [seed, 0]: the export at seed = --seed answers batch 0 exactly.
_POINTS_SEED, _DEQUANTIZE_SEED = 61, 63
#: Training images for the Gaussian baseline's covariance (needs more than D).
GAUSSIAN_BASELINE_IMAGES = 10_000


def ode_settings(config: config_lib.Config) -> dict:
  """The likelihood settings of the run: tolerances and ε are the ODE sampler's.

  --exact_trace (the default) takes the exact divergence on the toys (2-D: two
  backward passes per evaluation); images always take the Hutchinson estimate with
  --hutchinson_probes (a backward pass per dimension would be thousands).
  """
  ev, s = config.eval, config.sampling
  return dict(exact_trace=ev.exact_trace and config.data.is_toy,
              hutchinson_probes=ev.hutchinson_probes, probe=ev.probe, rtol=s.ode_rtol,
              atol=s.ode_atol, eps=s.sampling_eps)


def model_log_prob(config: config_lib.Config, score_model, x, seed):
  """(log p_model(x) float32 [N] in nats, its standard error [N], nfe) of the run's SDE and
  ODE settings; the standard error is the Hutchinson estimate's (likelihood.LikelihoodParts:
  0 for the exact trace, NaN for one probe)."""
  sde = noise.build_sde(config.model)
  parts = likelihood.log_likelihood_parts(configured.time_score_fn(score_model, sde), sde, x,
                                          seed, **ode_settings(config))
  return parts.log_prob, parts.log_prob_stderr, parts.nfe


def image_bits_per_dim(config: config_lib.Config, log_prob, x_model) -> tf.Tensor:
  """bits/dim [N] of images x_model [N, H, W, C] in the model's space (y, or its logit)."""
  dims = int(np.prod(x_model.shape[1:]))
  if config.data.logit_transform:
    return likelihood.bits_per_dim(log_prob, dims, logit_alpha=images_lib.LOGIT_LAMBDA,
                                   x_model=x_model)
  return likelihood.bits_per_dim(log_prob, dims)


def _mean_and_stderr(values) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 \
      else float('nan')


def _nan_mean(values):
  """The mean of per-example standard errors, or None where they are not known (one probe)."""
  values = np.asarray(values, np.float64)
  return None if np.any(np.isnan(values)) else float(values.mean())


def _batches(x, batch_size: int):
  for start in range(0, len(x), batch_size):
    yield start, x[start:start + batch_size]


def _score_batches(config, score_model, x, to_metric, name: str):
  """Runs the ODE over x in batches.

  Returns (per-example metric [N], its per-example standard error [N] in the metric's
  units, NFE per batch); to_metric(log_prob, batch) is affine in log_prob, and
  to_metric(0) − to_metric(stderr) scales the standard error alike.
  """
  values, stderrs, nfes = [], [], []
  progress = Progress(name, len(x))
  for k, (start, batch) in enumerate(_batches(x, config.eval.batch_size)):
    batch = tf.constant(batch, tf.float32)
    log_prob, stderr, nfe = model_log_prob(config, score_model, batch,
                                           tf.constant([config.seed, k], tf.int32))
    values.append(np.asarray(to_metric(log_prob, batch)))
    stderrs.append(np.abs(np.asarray(to_metric(stderr, batch))
                          - np.asarray(to_metric(tf.zeros_like(stderr), batch))))
    nfes.append(int(nfe))
    progress.update(start + len(batch))
  progress.close()
  return np.concatenate(values), np.concatenate(stderrs), nfes


def _model_samples(config, score_model, num: int, shape) -> np.ndarray:
  """--likelihood_source=samples: `num` samples of --sampler, batch k from the 'likelihood'
  stream at index k, with a progress line that moves with the chains' steps."""
  sampler = configured.ConfiguredSampler(config, score_model, shape)
  out = []
  with Progress('likelihood samples', num) as progress:
    try:
      for k, (start, _) in enumerate(_batches(np.zeros(num), config.sampling.sample_batch_size)):
        size = min(config.sampling.sample_batch_size, num - start)
        draw.STEP_PROGRESS.target(progress, start, size)
        samples, _, _ = sampler.sample(size, config.seed, index=k, stream='likelihood',
                                       callback=draw.STEP_PROGRESS)
        out.append(samples.numpy())
    finally:
      draw.STEP_PROGRESS.target(None)
  return np.concatenate(out)


def toy_likelihood(config: config_lib.Config, score_model) -> dict:
  """Mean NLL in nats of toy points (fresh draws, or the model's samples), with exact values."""
  dist = toy.get_toy(config.data.dataset)
  num = config.eval.likelihood_examples
  if config.eval.likelihood_source == 'samples':
    points = _model_samples(config, score_model, num, (dist.dim,))
  else:
    points = dist.sample(num, seed=[config.seed + _POINTS_SEED, 0]).numpy()
  start = time.perf_counter()
  nll, probe_stderr, nfes = _score_batches(config, score_model, points,
                                           lambda lp, _: -lp.numpy(), 'likelihood')
  seconds = time.perf_counter() - start
  mean, stderr = _mean_and_stderr(nll)
  out = {'source': config.eval.likelihood_source, 'num_examples': len(points),
         'nll_nats': mean, 'nll_nats_stderr': stderr,
         'per_example_stderr_nats': _nan_mean(probe_stderr), 'nfe_per_batch': nfes,
         'seconds_per_example': seconds / len(points), 'settings': ode_settings(config)}
  exact = -dist.log_prob(points).numpy()
  out['exact_nll_nats'] = float(np.mean(exact))
  # Per point: does the model's density rank and scale the points as the truth does?
  out['correlation_with_exact'] = float(np.corrcoef(nll, exact)[0, 1])
  # Paired over the same points: the model's excess NLL is far tighter than
  # either mean's own standard error (which is the points' spread).
  out['excess_nll_nats'], out['excess_nll_nats_stderr'] = _mean_and_stderr(nll - exact)
  if dist.has_perturbed_score and hasattr(dist, 'perturbed_log_prob'):
    sde = noise.build_sde(config.model)
    sigma_eps = float(sde.sigma_of_t([config.sampling.sampling_eps]).numpy()[0])
    out['exact_nll_nats_perturbed'] = float(-np.mean(
        dist.perturbed_log_prob(points, sigma_eps).numpy()))
    out['sigma_eps'] = sigma_eps
  return out


def _quantized(images) -> np.ndarray:
  """float images in [0, 1] on the k/255 grid -> their 8-bit values (float32 0..255)."""
  return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.float32)


def _split_images(config, split: str, limit: int) -> np.ndarray:
  batches = list(image_eval.dataset_images(config, split, limit))
  if not batches:
    raise FileNotFoundError(f'--likelihood_split={split}: no images in that split')
  return np.concatenate(batches)


def image_likelihood(config: config_lib.Config, score_model) -> dict:
  """Bits/dim of images (a split, or the model's samples) with the two baselines."""
  ev = config.eval
  if ev.likelihood_source == 'samples':
    shape = data_lib.data_shape(config.data)
    raw = _model_samples(config, score_model, ev.likelihood_examples or 1000, shape)
    raw = data_lib.to_unit_range(raw, config.data)
    pixels = _quantized(raw)
  else:
    pixels = _quantized(_split_images(config, ev.likelihood_split, ev.likelihood_examples))
  start = time.perf_counter()
  repeats, repeat_stderrs, first_inputs = [], [], None
  for r in range(ev.likelihood_repeats):
    # The training pipeline's dequantisation, x·255/256 + u/256 (images.dequantize).
    y = images_lib.dequantize(pixels / 255.0, tf.constant([config.seed + _DEQUANTIZE_SEED, r]))
    x_model = images_lib.logit_transform(y) if config.data.logit_transform else y
    if first_inputs is None:
      first_inputs = x_model.numpy()
    bpd, bpd_stderr, nfes = _score_batches(
        config, score_model, x_model.numpy(),
        lambda lp, xb: image_bits_per_dim(config, lp, xb).numpy(),
        f'likelihood {r + 1}/{ev.likelihood_repeats}')
    repeats.append(bpd)
    repeat_stderrs.append(bpd_stderr)
  seconds = time.perf_counter() - start
  per_image = np.mean(repeats, axis=0)
  mean, stderr = _mean_and_stderr(per_image)
  train = _quantized(_split_images(config, 'train', GAUSSIAN_BASELINE_IMAGES))
  gaussian = likelihood.gaussian_baseline_bpd(
      train, pixels, logit_alpha=images_lib.LOGIT_LAMBDA if config.data.logit_transform else None,
      seed=config.seed)
  g_mean, g_stderr = _mean_and_stderr(gaussian)
  per_example = {'pixels': pixels.astype(np.uint8), 'inputs': first_inputs,
                 'bits_per_dim': np.asarray(repeats, np.float32),
                 'bits_per_dim_stderr': np.asarray(repeat_stderrs, np.float32)}
  return {'per_example': per_example, 'source': ev.likelihood_source, 'split': ev.likelihood_split,
          'num_examples': len(pixels), 'repeats': ev.likelihood_repeats,
          'bits_per_dim': mean, 'bits_per_dim_stderr': stderr,
          'per_example_stderr_bits_per_dim': _nan_mean(repeat_stderrs), 'nfe_per_batch': nfes,
          'seconds_per_example': seconds / (len(pixels) * ev.likelihood_repeats),
          'settings': ode_settings(config),
          'baselines': {'gaussian_full_covariance': g_mean, 'gaussian_stderr': g_stderr,
                        'gaussian_train_images': len(train), 'uniform': likelihood.UNIFORM_BPD}}


def _summary_line(result: dict) -> str:
  if 'nll_nats' in result:
    line = (f'NLL {result["nll_nats"]:.4f} ± {result["nll_nats_stderr"]:.4f} nats over '
            f'{result["num_examples"]} points; exact {result["exact_nll_nats"]:.4f}, excess '
            f'{result["excess_nll_nats"]:.4f} ± {result["excess_nll_nats_stderr"]:.4f}')
    if 'exact_nll_nats_perturbed' in result:
      line += f' (perturbed to σ(ε): {result["exact_nll_nats_perturbed"]:.4f})'
  else:
    b = result['baselines']
    line = (f'{result["bits_per_dim"]:.3f} ± {result["bits_per_dim_stderr"]:.3f} bits/dim over '
            f'{result["num_examples"]} images; full-covariance Gaussian '
            f'{b["gaussian_full_covariance"]:.3f}, uniform {b["uniform"]:.0f}')
  nfe = np.mean(result['nfe_per_batch'])
  return f'{line}; NFE {nfe:.0f} per batch, {1e3 * result["seconds_per_example"]:.1f} ms per example'


#: The result directories of --mode=likelihood (evaluation/results.py).
LIKELIHOOD_DIR = 'likelihood'


def result_name(config: config_lib.Config, step: int) -> str:
  """What made a likelihood: the source, the divergence, the solver and the examples.

  e.g. 'data=test,hutchinson=1,probe=rademacher,rtol=1e-05,atol=1e-05,eps=1e-05,
  examples=1000,repeats=1,seed=0,step=8000'; --likelihood_source=samples names
  the sampler and its settings in place of the split.
  """
  ev, settings = config.eval, ode_settings(config)
  if ev.likelihood_source == 'samples':
    source = f'samples,{results.sampler_part(config.sampling)}'
  else:
    source = results.part('data', 'fresh' if config.data.is_toy else ev.likelihood_split)
  trace = ['exact_trace'] if ev.exact_trace else [
      results.part('hutchinson', ev.hutchinson_probes), results.part('probe', ev.probe)]
  parts = [source, *trace, *(results.part(k, settings[k]) for k in ('rtol', 'atol', 'eps')),
           results.part('examples', ev.likelihood_examples)]
  if not config.data.is_toy:
    parts.append(results.part('repeats', ev.likelihood_repeats))
  return results.name_of(*parts, seed=config.seed, step=step)


def write_result(config: config_lib.Config, step: int, result: dict) -> str:
  """<workdir>/likelihood/<result_name>/: likelihood.json (the result, with 'step' and
  'result_dir' added to `result`) and, for images, per_example.npz (popped from `result`):
  every image's bits/dim, to rank or re-check.

  per_example.npz arrays: pixels uint8 [N, H, W, C] (the scored images), inputs
  float32 [N, H, W, C] (repeat 0's dequantised model inputs: batch k of
  --eval_batch_size, fed with seed --seed to the export's log_likelihood,
  reproduces that batch's values, whose probes come from [--seed, k]),
  bits_per_dim float32 [repeats, N] and bits_per_dim_stderr float32 [repeats, N]
  (each value's Hutchinson standard error; NaN with one probe). Returns the directory.
  """
  name = result_name(config, step)
  arrays = result.pop('per_example', None)
  result.update(step=step, result_dir=os.path.join(config.workdir, LIKELIHOOD_DIR, name))
  with results.writing(config.workdir, LIKELIHOOD_DIR, name,
                       {'step': step, 'seed': config.seed, **ode_settings(config)}) as staging:
    if arrays is not None:
      artifacts.write_npz(os.path.join(staging, 'per_example.npz'), **arrays)
    artifacts.write_json(os.path.join(staging, 'likelihood.json'), result)
  return result['result_dir']


def evaluate_likelihood(config: config_lib.Config, state=None) -> dict:
  """Scores every checkpoint of --eval_checkpoints (or `state`); returns {step: result}.

  Each result goes to its own directory (`write_result`; likelihood/latest points
  to the last), and into <workdir>/metrics.json under 'likelihood', keyed by the
  result's name, so likelihoods of other settings or checkpoints stay beside it.
  """
  if state is None:
    checkpoints.check_resume_config(config)
    targets = image_eval.select_checkpoints(config)
    state = checkpoints.create_state(config, tf.distribute.get_strategy())
  else:
    targets = {int(state.step.numpy()): None}
  # After the checks: a refused run adds nothing to the workdir, not even an event file.
  writer = tf.summary.create_file_writer(os.path.join(config.workdir, 'tensorboard'))
  score = toy_likelihood if config.data.is_toy else image_likelihood
  results_by_step, by_name = {}, {}
  for step, path in targets.items():
    if path is not None:
      step = checkpoints.restore_step(state, path)
    result = score(config, state.score_model)
    write_result(config, step, result)
    with writer.as_default(step=step):
      key = 'nll_nats' if config.data.is_toy else 'bits_per_dim'
      tf.summary.scalar(f'eval/likelihood_{key}', result[key])
      if not config.data.is_toy:
        tf.summary.scalar('eval/likelihood_gaussian_baseline_bpd',
                          result['baselines']['gaussian_full_covariance'])
    writer.flush()
    logging.info('likelihood, step %d: %s; wrote %s', step, _summary_line(result),
                 result['result_dir'])
    results_by_step[str(step)] = result
    by_name[os.path.basename(result['result_dir'])] = result
  metrics = artifacts.read_metrics(config.workdir)
  metrics['likelihood'] = {**metrics.get('likelihood', {}), **by_name}
  artifacts.write_metrics(config.workdir, metrics)
  return results_by_step
