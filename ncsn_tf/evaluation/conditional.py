"""Conditional generation on test images: inpainting and colourisation, written to the workdir.

`inpaint_run` completes test images under --inpaint_mask and `colorize_run`
colours them from their grey axis, each with the run's --sampler (every
sampler takes the conditions of ncsn_tf/sampling/conditions.py); the
colourisation is measured against the originals.
"""


import os

import numpy as np
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf import plots
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.evaluation import results
from ncsn_tf.runtime import artifacts
from ncsn_tf.runtime import checkpoints
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import draw
from ncsn_tf.sampling import inpainting
from ncsn_tf.sampling import samplers


#: The result directories of the two modes (evaluation/results.py).
INPAINTING_DIR, COLORIZATION_DIR = 'inpainting', 'colorization'


def _rmse(a, b) -> float:
  return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b)**2)))


def _rmse_between(completions) -> float | None:
  """RMSE between two completions of one image, over all pairs; None for one completion.

  For a sampler of the true conditional the original is one more draw from it, so
  this equals the completions' RMSE against the originals (a calibration check).
  """
  k = completions.shape[1]
  if k < 2:
    return None
  pairs = [np.mean((completions[:, i] - completions[:, j]).astype(np.float64)**2)
           for i in range(k) for j in range(i + 1, k)]
  return float(np.sqrt(np.mean(pairs)))


def _test_images(config: config_lib.Config, num: int) -> np.ndarray:
  """The first `num` images of the test split, in the data's range: float32 [num, H, W, C]."""
  make_dataset = data_lib.dataset_fn(config.replace(train={'batch_size': num}), split='test',
                                     shuffle=False)
  return next(iter(make_dataset(None))).numpy()


def _draw_under(config: config_lib.Config, state, condition, desc: str) -> tuple[np.ndarray, int]:
  """Samples with --sampler under `condition` (sampling/conditions.py), one per row of its
  `known`, from seed [seed, 7]: (samples [M, H, W, C], score evaluations per sample).
  desc names the progress line, which moves with the chain's steps."""
  sampler = configured.ConfiguredSampler(config, state.score_model,
                                         data_lib.data_shape(config.data))
  samples, _, nfe = draw.sample_one_batch(sampler, int(condition.known.shape[0]), config.seed,
                                          desc=desc, index=configured.CONDITIONED_BATCH,
                                          condition=condition)
  return samples.numpy(), int(nfe)


def inpaint_run(config: config_lib.Config, state=None) -> str:
  """Completes --num_inpaint_images test images under --inpaint_mask, with --sampler.

  Every sampler accepts the inpainting condition (sampling/conditions.py, docs/controllable.md).
  Writes <workdir>/inpainting/mask=M,<sampler and settings>,seed=S,step=N/
  (evaluation/results.py; inpainting/latest points to it): inpainting.png, one
  row per image with the original, the masked input and --inpaint_completions
  completions, and inpainting.npz with the arrays. Returns that directory.
  """
  state = state or checkpoints.restore_for_inference(config)
  s = config.sampling
  originals = _test_images(config, s.num_inpaint_images)
  shape = originals.shape
  if s.inpaint_mask in inpainting.MASK_KINDS:
    mask = inpainting.make_mask(s.inpaint_mask, shape, seed=config.seed)
  else:
    mask = inpainting.mask_from_image(s.inpaint_mask, shape)
  repeated = np.repeat(originals, s.inpaint_completions, axis=0)
  repeated_mask = np.repeat(mask, s.inpaint_completions, axis=0)
  completions, nfe = _draw_under(config, state, conditions.inpainting(repeated, repeated_mask),
                                 'inpaint')
  completions = completions.reshape((shape[0], s.inpaint_completions) + shape[1:])
  masked = originals * mask + 0.5 * (1 - mask)  # Unknown pixels shown grey.
  rows = np.concatenate([originals[:, None], masked[:, None], completions], axis=1)
  step = int(state.step.numpy())
  mask_name = s.inpaint_mask if s.inpaint_mask in inpainting.MASK_KINDS else \
      os.path.basename(s.inpaint_mask)
  name = results.name_of(results.part('mask', mask_name), results.sampler_part(s),
                         seed=config.seed, step=step)
  settings = {**results.sampler_settings(config), 'step': step, 'inpaint_mask': s.inpaint_mask,
              'images': shape[0], 'completions_per_image': s.inpaint_completions,
              'nfe_per_completion': nfe}
  with results.writing(config.workdir, INPAINTING_DIR, name, settings) as staging:
    plots.save_png(plots.image_grid(rows.reshape((-1,) + shape[1:]), nrow=rows.shape[1]),
                   os.path.join(staging, 'inpainting.png'))
    artifacts.write_npz(os.path.join(staging, 'inpainting.npz'), originals=originals, mask=mask,
                        completions=completions)
  out_dir = os.path.join(config.workdir, INPAINTING_DIR, name)
  logging.info('wrote %d completions of %d images to %s (%s, %d score evaluations per '
               'completion)', shape[0] * s.inpaint_completions, shape[0], out_dir,
               samplers.describe(s), nfe)
  return out_dir


def colorize_run(config: config_lib.Config, state=None) -> dict:
  """Colourises --num_inpaint_images test images from their grey axis, with --sampler.

  The grey coordinate (r + g + b)/√3 of every pixel is known and the two
  chroma coordinates are sampled (sampling/conditions.py, docs/controllable.md).
  Writes <workdir>/colorization/<sampler and settings>,seed=S,step=N/
  (evaluation/results.py; colorization/latest points to it): colorization.png (per row the original, the
  grey input and --inpaint_completions completions), colorization.npz
  (originals, grey [N, H, W, 1], completions [N, K, H, W, 3] as sampled) and
  colorization.json: the colour error, RMSE over pixels and channels in [0, 1]
  units, of the completions (clipped to [0, 1]) and of their mean per image
  against the originals, beside the grey-to-colour baseline's (the grey
  image in all three channels), and the RMSE between two completions of one
  image (a sampler of the true conditional has it equal to the completions'
  error: the original is one more draw). Returns the JSON's dict with
  'result_dir', the directory written.
  """
  state = state or checkpoints.restore_for_inference(config)
  s = config.sampling
  originals = _test_images(config, s.num_inpaint_images)
  shape = originals.shape
  grey = conditions.grey_of(originals).numpy()
  condition = conditions.colorization(np.repeat(grey, s.inpaint_completions, axis=0))
  completions, nfe = _draw_under(config, state, condition, 'colorize')
  completions = completions.reshape((shape[0], s.inpaint_completions) + shape[1:])
  colour = np.clip(completions, 0.0, 1.0)
  baseline = np.repeat(grey, shape[-1], axis=-1)
  result = {
      'images': shape[0], 'completions_per_image': s.inpaint_completions,
      'sampler': samplers.describe(s), 'nfe_per_completion': nfe,
      'rmse_completions': _rmse(colour, originals[:, None]),
      'rmse_mean_of_completions': _rmse(colour.mean(axis=1), originals),
      'rmse_grey_baseline': _rmse(baseline, originals),
      'rmse_between_completions': _rmse_between(colour),
      'rmse_completions_per_image': [_rmse(c, o) for c, o in zip(colour, originals[:, None])],
      'rmse_grey_baseline_per_image': [_rmse(b, o) for b, o in zip(baseline, originals)]}
  rows = np.concatenate([originals[:, None], baseline[:, None], colour], axis=1)
  step = int(state.step.numpy())
  name = results.name_of(results.sampler_part(s), seed=config.seed, step=step)
  settings = {**results.sampler_settings(config), 'step': step}
  with results.writing(config.workdir, COLORIZATION_DIR, name, settings) as staging:
    plots.save_png(plots.image_grid(rows.reshape((-1,) + shape[1:]), nrow=rows.shape[1]),
                   os.path.join(staging, 'colorization.png'))
    artifacts.write_npz(os.path.join(staging, 'colorization.npz'), originals=originals,
                        grey=grey, completions=completions)
    artifacts.write_json(os.path.join(staging, 'colorization.json'), result)
  out_dir = os.path.join(config.workdir, COLORIZATION_DIR, name)
  result['result_dir'] = out_dir
  logging.info('colourisation (%s, %d score evaluations each): RMSE %.4f of %d completions '
               'against the originals (their mean per image: %.4f; between two completions: '
               '%s); grey-to-colour baseline %.4f; wrote %s', result['sampler'], nfe,
               result['rmse_completions'], colour.shape[0] * colour.shape[1],
               result['rmse_mean_of_completions'], result['rmse_between_completions'],
               result['rmse_grey_baseline'], out_dir)
  return result
