"""Inpainting and colourisation as conditions of every sampler (sampling/conditions.py).

Closed forms: the colour transform's algebra; the replacement's kernel; on a
2-D Gaussian with its exact score, the conditional N(m, V) of the unknown
coordinate given the known one; and the noise the known coordinates end with.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from test_image_training import config_from_flagfile

from ncsn_tf import config as config_lib
from ncsn_tf import noise
from ncsn_tf.cli import modes
from ncsn_tf.runtime import checkpoints
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling import inpainting
from ncsn_tf.sampling import samplers

SQRT3 = np.sqrt(3.0)


def test_the_colour_transform_is_orthonormal_grey_first_and_round_trips():
  m = conditions.COLOUR_MATRIX
  np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-6)          # Orthonormal rows.
  np.testing.assert_allclose(m[0], np.ones(3) / SQRT3, atol=1e-7)     # The grey axis first.
  images = tf.random.stateless_uniform([2, 4, 5, 3], [1, 2])
  coords = conditions.to_colour_space(images)
  np.testing.assert_allclose(conditions.from_colour_space(coords), images, atol=1e-6)
  np.testing.assert_allclose(coords, np.einsum('nhwi,ji->nhwj', images.numpy(), m), atol=1e-6)
  # A grey image (g, g, g) has the coordinates (√3 g, 0, 0).
  grey = tf.random.stateless_uniform([2, 4, 5, 1], [3, 4])
  grey_coords = conditions.to_colour_space(tf.tile(grey, [1, 1, 1, 3])).numpy()
  np.testing.assert_allclose(grey_coords[..., 0], SQRT3 * grey.numpy()[..., 0], atol=1e-6)
  np.testing.assert_allclose(grey_coords[..., 1:], 0.0, atol=1e-6)


def test_colourisation_knows_the_grey_axis_of_grey_and_rgb_images_alike():
  rgb = tf.random.stateless_uniform([2, 4, 4, 3], [5, 6])
  from_rgb = conditions.colorization(rgb)
  from_grey = conditions.colorization(tf.reduce_mean(rgb, axis=-1, keepdims=True))
  np.testing.assert_allclose(from_rgb.known, from_grey.known, atol=1e-7)
  np.testing.assert_array_equal(from_rgb.mask, np.broadcast_to([1.0, 0.0, 0.0], (2, 4, 4, 3)))
  assert from_rgb.transform is conditions.COLOUR
  # The known coordinate is the RGB image's projection on the grey axis, (r + g + b)/√3.
  known = from_rgb.to_space(from_rgb.known).numpy()[..., 0]
  np.testing.assert_allclose(known, rgb.numpy().sum(-1) / SQRT3, atol=1e-6)
  with pytest.raises(ValueError, match=r'grey \[N, H, W, 1\] or RGB \[N, H, W, 3\]'):
    conditions.colorization(tf.zeros([1, 4, 4, 2]))


@pytest.mark.parametrize('transform', [None, conditions.COLOUR])
def test_the_replacement_is_the_perturbation_kernel_on_the_known_coordinates(transform):
  """impose(x, α, std, z): known coordinates α T(known) + std z, the rest untouched.

  20,000 draws of z: the known coordinates' mean and std match α T(known) and
  std within 5 standard errors (std/√M = 0.0021 and std/√(2M) = 0.0015).
  """
  num, alpha, std = 20_000, 0.7, 0.3
  known = tf.random.stateless_uniform([num, 2, 3], [1, 1])
  mask = np.zeros((num, 2, 3), np.float32)
  mask[:, 0] = 1.0
  if transform is not None:  # The grey axis of each of the two pixels.
    mask = np.zeros((num, 2, 3), np.float32)
    mask[..., 0] = 1.0
  condition = conditions.Condition(known, mask, transform)
  x = tf.random.stateless_normal([num, 2, 3], [2, 2])
  z = tf.random.stateless_normal([num, 2, 3], [3, 3])
  out = condition.to_space(condition.impose(x, alpha, std, z)).numpy()
  before, target = condition.to_space(x).numpy(), condition.to_space(known).numpy()
  known_mask = mask.astype(bool)
  deviation = (out - alpha * target)[known_mask]
  assert abs(deviation.mean()) < 5 * std / np.sqrt(deviation.size)
  assert abs(deviation.std() - std) < 5 * std / np.sqrt(2 * deviation.size)
  # Unknown coordinates: to the bit in pixels, to float32 round-off through the transform.
  np.testing.assert_allclose(out[~known_mask], before[~known_mask],
                             atol=0.0 if transform is None else 1e-6)


# Per-coordinate data N(0.5, 0.2²): the exact score of p_t is −(x − 0.5 α)/(0.04 α² + std²).
DATA_MEAN, DATA_VAR = 0.5, 0.04
SDE = noise.VESDE(0.01, 1.0)
LADDER = noise.Ladder(1.0, 0.01, 3)


def pixel_score(x, t):
  alpha, std = SDE.mean_coeff(t), SDE.std(t)
  return -(x - DATA_MEAN * alpha[:, None, None, None]) / (
      DATA_VAR * alpha[:, None, None, None]**2 + std[:, None, None, None]**2)


# name -> (registry name, settings), a few steps each: the known coordinates
# are set by construction, not by convergence.
FAST = {
    'ald': ('ald', dict(ladder=LADDER, n_steps_each=5, step_lr=1e-5, denoise=False)),
    'ald+denoise': ('ald', dict(ladder=LADDER, n_steps_each=5, step_lr=1e-5, denoise=True)),
    'pc': ('pc', dict(num_steps=10, denoise=False)),
    'pc+denoise': ('pc', dict(num_steps=10, denoise=True)),
    'ode': ('ode', dict(rtol=1e-3, atol=1e-3, denoise=False)),
    'ode+denoise': ('ode', dict(rtol=1e-3, atol=1e-3, denoise=True)),
    'heun': ('heun', dict(num_steps=4)),
}
IMAGES = tf.random.stateless_uniform([4, 8, 8, 3], [7, 7]).numpy()
X_INIT = SDE.prior_sample([4, 8, 8, 3], tf.constant([8, 8])).numpy()


def fast_sample(sampler, condition):
  name, settings = FAST[sampler]
  x, _ = samplers.make_sampler(name, SDE, **settings)(pixel_score, X_INIT, tf.constant([9, 9]),
                                                      condition=condition)
  return x.numpy()


@pytest.mark.parametrize('sampler', ['ald+denoise', 'pc+denoise', 'ode+denoise', 'heun'])
def test_noise_free_samplers_end_at_the_known_pixels_and_grey_axis_exactly(sampler):
  """Ending at σ = 0 (denoise, Heun), the known coordinates are the known data: pixels
  to the bit, the grey axis to float32 round-off of the transform; the unknown
  ones were sampled (they differ from the originals by about the data's spread)."""
  mask = inpainting.make_mask('right', IMAGES.shape)
  out = fast_sample(sampler, conditions.inpainting(IMAGES, mask))
  known = mask.astype(bool)
  np.testing.assert_array_equal(out[known], IMAGES[known])
  assert np.abs(out - IMAGES)[~known].mean() > 0.05
  colour = conditions.colorization(IMAGES)
  coords = conditions.to_colour_space(fast_sample(sampler, colour)).numpy()
  originals = conditions.to_colour_space(IMAGES).numpy()
  np.testing.assert_allclose(coords[..., 0], originals[..., 0], atol=2e-6)
  assert np.abs(coords[..., 1:] - originals[..., 1:]).mean() > 0.05


def test_noisy_endings_leave_the_last_levels_noise_on_the_known_pixels():
  """Without denoise the known pixels end at the original plus the last level's noise:
  annealed Langevin σ_L = 0.01 and PC std(eps) = σ(1e-5) ≈ 0.01, fresh per pixel, so
  their deviation has mean 0 and std 0.01 (384 known values: 5 standard errors of the
  std are 18%, allowed 20%); the ODE's come out on the path of the point mass,
  known + σ(eps) z with z = (x_T − known)/σ(T) fixed, to float32 round-off."""
  mask = inpainting.make_mask('right', IMAGES.shape)
  known = mask.astype(bool)
  condition = conditions.inpainting(IMAGES, mask)
  for sampler in ('ald', 'pc'):
    deviation = (fast_sample(sampler, condition) - IMAGES)[known]
    assert abs(deviation.std() - 0.01) < 0.002 and abs(deviation.mean()) < 0.002, sampler
  sigma_eps = float(SDE.std([SDE.default_sampling_eps])[0])
  path_end = IMAGES + sigma_eps * (X_INIT - IMAGES) / SDE.sigma_max
  np.testing.assert_allclose(fast_sample('ode', condition)[known], path_end[known], atol=1e-6)


# A correlated 2-D Gaussian: x0 known (= K), x1 generated.
MU = np.float32([0.5, -0.5])
K = 1.5


def gaussian_score(sde, cov):
  """The exact score of p_t = N(α μ, α² Σ + std² I), by the closed-form 2x2 inverse."""
  def score(x, t):
    alpha, std = sde.mean_coeff(t)[:, None], sde.std(t)[:, None]
    a, b, d = (alpha**2 * cov[i, j] + (std**2 if i == j else 0.0) for i, j in ((0, 0), (0, 1), (1, 1)))
    r = x - alpha * MU
    return -tf.concat([d * r[:, :1] - b * r[:, 1:], a * r[:, 1:] - b * r[:, :1]], 1) / (a * d - b**2)
  return score


def conditional(cov, sigma=0.0):
  """Mean and variance of x1 given x0 = K under N(μ, Σ + σ² I)."""
  c = cov + sigma**2 * np.eye(2)
  return MU[1] + c[0, 1] / c[0, 0] * (K - MU[0]), c[1, 1] - c[0, 1]**2 / c[0, 0]


def known_first(num):
  known = np.zeros((num, 2), np.float32)
  known[:, 0] = K
  mask = np.zeros((num, 2), np.float32)
  mask[:, 0] = 1.0
  return conditions.inpainting(known, mask)


CORRELATED = np.float32([[1.0, 0.8], [0.8, 1.0]])
INDEPENDENT = np.float32([[1.0, 0.0], [0.0, 0.5]])
NUM = 4000


def test_annealed_langevin_and_pc_inpainting_sample_the_gaussian_conditional():
  """ρ = 0.8, x0 = 1.5 known: x1 | x0 ~ N(0.3, 0.36) (at the samplers' last σ: ALD's
  σ_L = 0.05 gives N(0.298, 0.364), PC ends at σ ≈ 0.01).

  Tolerances on 4000 samples: the mean within 5 standard errors sqrt(V/M) = 0.0095;
  the variance within 5 standard errors V sqrt(2/M) = 0.008, plus 3% for the Langevin
  steps' discretisation (measured: ALD −0.7 se and +0.5%, PC within 1.3 se and +6%
  over three seeds). The replacement alone is not enough for correlated data: PC
  without its corrector put the mean 30 standard errors low and the variance 43% high.
  """
  ladder = noise.Ladder(3.0, 0.05, 6)  # Few levels, many steps: ALD's last levels mix.
  ald = samplers.make_sampler('ald', ladder.ve_sde(), ladder=ladder, n_steps_each=300,
                              step_lr=0.2 * 0.05**2, denoise=False)
  x_uniform = tf.random.stateless_uniform([NUM, 2], [1, 1], -3.0, 3.0)
  sde = noise.VESDE(0.01, 10.0)
  pc = samplers.make_sampler('pc', sde, num_steps=200, corrector_steps=1, snr=0.16)
  for name, sampler, score, x_init, sigma_end in (
      ('ald', ald, gaussian_score(ladder.ve_sde(), CORRELATED), x_uniform, 0.05),
      ('pc', pc, gaussian_score(sde, CORRELATED), sde.prior_sample([NUM, 2], tf.constant([1, 1])),
       0.01)):
    x, _ = sampler(score, x_init, tf.constant([3, 4]), condition=known_first(NUM))
    x = x.numpy()
    mean, var = conditional(CORRELATED, sigma_end)
    assert abs(x[:, 1].mean() - mean) < 5 * np.sqrt(var / NUM), (name, x[:, 1].mean(), mean)
    assert abs(x[:, 1].var() - var) < 5 * var * np.sqrt(2 / NUM) + 0.03 * var, (name, x[:, 1].var())
    if name == 'pc':
      np.testing.assert_array_equal(x[:, 0], K)  # denoise: the known value itself.


def test_ode_and_heun_inpainting_is_exact_for_independent_coordinates():
  """The deterministic samplers move the known coordinates along the point mass's
  probability-flow path, so an unknown coordinate independent of them follows its
  own probability flow: the conditioned run's x1 is the unconditioned run's (Heun to
  float32 round-off; the ODE within its tolerance, as the adaptive steps are shared
  with the known coordinate), with N(−0.5, 0.5)'s moments (5 standard errors plus 3%,
  as tests/test_sde_samplers.py); x0 ends at the known value.

  For correlated data this construction is an approximation, not the conditional:
  with ρ = 0.8 and the exact score, Heun (VE, 18 steps) gave x1 mean −0.14 and
  variance 0.68 against the conditional's 0.30 and 0.36 (the ODE alike), because
  the unknown coordinate is not driven by the conditional's probability flow and a
  deterministic flow has no Langevin mixing to correct it (docs/controllable.md).
  """
  sde = noise.VESDE(0.01, 10.0)
  score = gaussian_score(sde, INDEPENDENT)
  # Exact draws from p_T = N(μ, Σ + σ_max² I): the prior's offset from p_T is not measured here.
  x_init = (MU + np.sqrt(np.diag(INDEPENDENT) + 100.0) * tf.random.stateless_normal(
      [NUM, 2], [1, 1])).numpy()
  for name, settings, atol in (('heun', dict(num_steps=18), 1e-6),
                               ('ode', dict(rtol=1e-4, atol=1e-4, denoise=True), 2e-3)):
    sampler = samplers.make_sampler(name, sde, **settings)
    free, _ = sampler(score, x_init, tf.constant([1, 2]))
    held, _ = sampler(score, x_init, tf.constant([1, 2]), condition=known_first(NUM))
    free, held = free.numpy(), held.numpy()
    np.testing.assert_allclose(held[:, 1], free[:, 1], atol=atol, err_msg=name)
    np.testing.assert_array_equal(held[:, 0], K)
    assert abs(held[:, 1].mean() + 0.5) < 5 * np.sqrt(0.5 / NUM), (name, held[:, 1].mean())
    assert abs(held[:, 1].var() - 0.5) < 5 * 0.5 * np.sqrt(2 / NUM) + 0.015, (name, held[:, 1].var())


def test_the_condition_is_not_a_sampler_setting_and_bad_conditions_fail_before_sampling():
  for name in samplers.names():
    extra = {'ladder': LADDER} if name == 'ald' else {}
    assert 'condition' not in samplers.resolve_settings(name, SDE, **extra)
  heun = samplers.make_sampler('heun', SDE, num_steps=2)
  calls = []
  score = lambda x, t: calls.append(1) or -x
  mask = inpainting.make_mask('right', IMAGES.shape)
  for condition, match in (
      (conditions.Condition(IMAGES[:2], mask[:2]), r"the condition's known has shape \[2, 8, 8, 3\], "
       r'the samples \[4, 8, 8, 3\]'),
      (conditions.Condition(IMAGES, mask[..., :1]), r"the condition's mask has shape"),
      (conditions.Condition(IMAGES, 0.5 * mask), 'the condition mask must be 0 .unknown. or 1'),
      ((IMAGES, mask), 'condition must be a sampling.conditions.Condition, got tuple')):
    with pytest.raises(ValueError, match=match) as error:
      heun(score, X_INIT, tf.constant([0, 0]), condition=condition)
    assert '\n' not in str(error.value)
  with pytest.raises(ValueError, match='the colour transform needs samples with 3 channels'):
    heun(score, X_INIT[..., :1], tf.constant([0, 0]),
         condition=conditions.Condition(IMAGES[..., :1], mask[..., :1], conditions.COLOUR))
  with pytest.raises(ValueError, match=r'the inpainting mask has shape \[4, 8, 8, 1\]'):
    conditions.inpainting(IMAGES, mask[..., :1])
  assert not calls  # No score was evaluated.


def _config(tmp_path, **groups):
  config = config_lib.Config(name='t', workdir=str(tmp_path / 'w'),
                             export=config_lib.ExportConfig(str(tmp_path / 'e')))
  return config.replace(**groups)


@pytest.mark.parametrize('groups,expected', [
    ({'mode': 'colorize', 'data': {'dataset': 'mnist'}, 'model': {'name': 'refinenet'}},
     '--mode: colorize needs an RGB image --dataset; mnist has one channel'),
    ({'mode': 'colorize', 'data': {'dataset': 'digits', 'image_size': 16},
      'model': {'name': 'refinenet'}}, '--mode: colorize needs an RGB image --dataset; digits has one'),
    ({'mode': 'colorize'}, '--mode: colorize needs an RGB image --dataset; gmm has 2-D points'),
    ({'mode': 'colorize', 'data': {'dataset': 'shapes', 'logit_transform': True},
      'model': {'name': 'refinenet'}}, '--logit_transform: colorize knows the grey axis'),
])
def test_colorize_refuses_one_channel_data_and_logits_in_one_line(tmp_path, groups, expected):
  import dataclasses
  top = {k: groups.pop(k) for k in list(groups) if not isinstance(groups[k], dict)}
  config = dataclasses.replace(_config(tmp_path, **groups), **top)
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(config)
  assert expected in str(info.value) and '\n' not in str(info.value)


def test_colorize_and_inpaint_modes_run_through_the_configured_sampler(tmp_path):
  """--mode=colorize with Heun and --mode=inpaint with PC on an untrained continuous
  U-Net: the files, the known grey axis and pixels kept, the baseline's error as
  computed from the written arrays."""
  config = config_from_flagfile(
      'shapes_sde', '--ngf=4', '--image_size=16', '--sampling_steps=2', '--num_inpaint_images=2',
      '--inpaint_completions=2', f'--workdir={tmp_path}/run')
  state = checkpoints.create_state(config, tf.distribute.get_strategy())
  result = modes.run_colorize(config, state)
  out_dir = tmp_path / 'run' / 'colorization' / 'latest'
  assert os.path.samefile(out_dir, result['result_dir'])
  assert {'colorization.png', 'colorization.npz', 'colorization.json'} <= set(os.listdir(out_dir))
  arrays = np.load(out_dir / 'colorization.npz')
  originals, grey, completions = arrays['originals'], arrays['grey'], arrays['completions']
  assert completions.shape == (2, 2, 16, 16, 3) and grey.shape == (2, 16, 16, 1)
  # Heun ends at σ = 0: the grey axis is the input's, to float32 round-off of the transform
  # relative to the pixels' size (an untrained network's chroma can be large).
  np.testing.assert_allclose(completions.mean(-1), np.repeat(grey, 2, axis=-1).transpose(0, 3, 1, 2),
                             atol=1e-6 * (1 + np.abs(completions).max()))
  baseline = np.sqrt(np.mean((np.repeat(grey, 3, axis=-1) - originals)**2))
  assert json.loads((out_dir / 'colorization.json').read_text())['rmse_grey_baseline'] == \
      pytest.approx(baseline, rel=1e-6) == result['rmse_grey_baseline']
  assert result['nfe_per_completion'] == 3 and np.isfinite(result['rmse_completions'])

  # The ald corrector: an untrained network's score is 0, where the snr-set step of the
  # langevin corrector is infinite (NaN samples with or without a condition).
  pc_config = config.replace(sampling={'sampler': 'pc', 'sampling_steps': 2, 'corrector': 'ald'})
  out = modes.run_inpaint(pc_config, state)
  arrays = np.load(os.path.join(out, 'inpainting.npz'))
  known = np.broadcast_to(arrays['mask'][:, None], arrays['completions'].shape).astype(bool)
  originals = np.broadcast_to(arrays['originals'][:, None], known.shape)
  np.testing.assert_array_equal(arrays['completions'][known], originals[known])  # PC's denoise.
  assert np.all(np.isfinite(arrays['completions']))
