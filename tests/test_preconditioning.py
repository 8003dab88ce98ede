"""EDM preconditioning of the image scores (`sigma_data`, `--preconditioning=edm`).

Both image networks take it: the RefineNet and the U-Net
(`ncsn_tf.models.preconditioning`).

Karras et al. 2022, table 1: in the network's centred space y, with σ and σ_d
in y units, D(y) = c_skip·y + c_out·F(c_in·y) with c_in = 1/√(σ² + σ_d²),
c_skip = σ_d²/(σ² + σ_d²), c_out = σ·σ_d/√(σ² + σ_d²), and the model returns
the score of x: (D − y)/(k·σ_x²) with y = 2x − 1 (k = 2) or the logits (k = 1).
The references below are closed forms (the Gaussian score) and invariances,
not the model's own formula.
"""

import re

import keras
import numpy as np
import pytest
from test_image_training import config_from_flagfile
from test_image_training import TINY

from ncsn_tf import config as config_lib
from ncsn_tf.models import registry as networks
from ncsn_tf.models.refinenet import CondRefineNetDilated
from ncsn_tf.models.unet import ScoreUNet
from ncsn_tf.training import loop as train_loop
from ncsn_tf.training import step as train_step

LADDER = np.geomspace(50.0, 0.01, 10)
SIGMA_DATA = 0.3
# float32 throughout; the scores below are O(1/σ²) sums of O(1) float32 terms.
RTOL = 2e-5


def _model(logit_transform=False, conditional_norm=True, seed=0, name='refinenet', norm='none'):
  keras.utils.set_random_seed(seed)
  if name == 'unet':
    return ScoreUNet(4, LADDER.tolist(), 16, 3, logit_transform=logit_transform,
                     scale_by_sigma=False, norm=norm, sigma_data=SIGMA_DATA).build_for()
  return CondRefineNetDilated(4, len(LADDER), 16, 3, logit_transform=logit_transform,
                              output_sigmas=LADDER.tolist(), conditional_norm=conditional_norm,
                              sigma_data=SIGMA_DATA).build_for()


def _output_layer(model):
  return model.out_conv if isinstance(model, ScoreUNet) else model.end_conv


def _set_output_layer(model, bias):
  layer = _output_layer(model)
  kernel, _ = layer.get_weights()
  layer.set_weights([np.zeros_like(kernel), np.asarray(bias, np.float32)])


def _randomise_output_layer(model, seed=0):
  """A nonzero F: the U-Net's output convolution starts at zero."""
  layer = _output_layer(model)
  rng = np.random.default_rng(seed)
  layer.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32) for w in layer.get_weights()])


def _score(model, x, level):
  labels = np.full(len(x), level, np.int32)
  return keras.ops.convert_to_numpy(model(x, labels))


@pytest.mark.parametrize('name', ['refinenet', 'unet'])
@pytest.mark.parametrize('logit_transform', [False, True])
def test_a_zero_network_gives_the_exact_score_of_gaussian_data(logit_transform, name):
  """F ≡ 0 leaves D = c_skip·y: the posterior mean of y ~ N(0, σ_d²), so the score
  must be the closed form for data N(centre, σ_d²) perturbed by N(0, σ²):
  −(x − centre)/(σ² + σ_d²), centre 0.5 for [0, 1] images and 0 for logits."""
  model = _model(logit_transform, name=name)
  _set_output_layer(model, np.zeros(3))
  rng = np.random.default_rng(1)
  centre = 0.0 if logit_transform else 0.5
  for level in (0, 4, 9):
    x = (centre + rng.normal(0, np.hypot(LADDER[level], SIGMA_DATA), (2, 16, 16, 3))).astype(np.float32)
    expected = -(x - centre) / (LADDER[level]**2 + SIGMA_DATA**2)
    np.testing.assert_allclose(_score(model, x, level), expected, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize('name', ['refinenet', 'unet'])
def test_the_network_output_enters_the_denoiser_scaled_by_c_out(name):
  """A constant output F = b moves the denoiser by c_out·b, and c_out tends to σ_d
  (y units: 2σ_d) at large σ and to σ (2σ) at small σ."""
  model = _model(name=name)
  bias = np.array([1.0, -0.5, 0.25], np.float32)
  _set_output_layer(model, bias)
  x = np.random.default_rng(2).random((2, 16, 16, 3)).astype(np.float32)
  y = 2.0 * x - 1.0
  for level in range(len(LADDER)):
    sigma_y, sigma_d = 2.0 * LADDER[level], 2.0 * SIGMA_DATA
    # Denoiser from the returned score: D = y + σ_y²·∇_y log p, and ∇_y = ∇_x / 2.
    denoised = y + sigma_y**2 * _score(model, x, level) / 2.0
    shift = denoised - y * sigma_d**2 / (sigma_y**2 + sigma_d**2)
    c_out = sigma_y * sigma_d / np.hypot(sigma_y, sigma_d)
    np.testing.assert_allclose(shift, np.broadcast_to(c_out * bias, shift.shape),
                               rtol=1e-4, atol=1e-5 * sigma_y**2)
  assert c_out == pytest.approx(2.0 * LADDER[-1], rel=1e-3)  # σ_L ≪ σ_d
  assert 2.0 * LADDER[0] * 2.0 * SIGMA_DATA / np.hypot(2.0 * LADDER[0], 2.0 * SIGMA_DATA) \
      == pytest.approx(2.0 * SIGMA_DATA, rel=1e-4)


def test_the_network_sees_the_input_divided_by_its_total_scale():
  """With shared normalizers F is one unconditional function of c_in·y. Inputs
  y_i at level i and y_j = y_i·c_in(i)/c_in(j) at level j reach F as the same
  tensor, so the F recovered from both scores must agree."""
  model = _model(conditional_norm=False)
  rng = np.random.default_rng(3)
  sigma_d = 2.0 * SIGMA_DATA

  def recovered_f(y, level):
    sigma_y = 2.0 * LADDER[level]
    total2 = sigma_y**2 + sigma_d**2
    denoised = y + sigma_y**2 * _score(model, (y + 1.0) / 2.0, level) / 2.0
    return (denoised - y * sigma_d**2 / total2) / (sigma_y * sigma_d / np.sqrt(total2))

  y_i = rng.normal(0, 1, (2, 16, 16, 3)).astype(np.float32)
  for i, j in [(5, 7), (2, 9)]:
    scale = np.sqrt((4 * LADDER[j]**2 + sigma_d**2) / (4 * LADDER[i]**2 + sigma_d**2))
    y_j = (y_i * scale).astype(np.float32)
    np.testing.assert_allclose(recovered_f(y_j, j), recovered_f(y_i, i), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('norm', ['none', 'group'])
def test_the_unet_stem_sees_the_input_divided_by_its_total_scale(norm):
  """The U-Net's F is level-conditioned (its embedding), so the RefineNet's
  invariance test does not apply; instead the stem must receive c_in·y =
  (2x − 1)/√(4σ² + 4σ_d²), whichever the normalisation."""
  model = _model(name='unet', norm=norm)
  seen = []
  stem_call = model.stem.call
  model.stem.call = lambda inputs: (seen.append(np.asarray(inputs)), stem_call(inputs))[1]
  x = np.random.default_rng(4).random((3, 16, 16, 3)).astype(np.float32)
  levels = np.array([0, 5, 9], np.int32)
  model(x, levels)
  total = np.sqrt(4.0 * LADDER[levels]**2 + 4.0 * SIGMA_DATA**2)[:, None, None, None]
  np.testing.assert_allclose(seen[0], (2.0 * x - 1.0) / total, rtol=1e-6)


def test_the_untrained_unet_already_gives_the_gaussian_score():
  # Its output convolution starts at zero, so no weights need setting: a
  # preconditioned U-Net starts from the best Gaussian fit, not from score 0.
  model = _model(name='unet')
  x = np.random.default_rng(5).random((2, 16, 16, 3)).astype(np.float32)
  for level in (0, 9):
    expected = -(x - 0.5) / (LADDER[level]**2 + SIGMA_DATA**2)
    np.testing.assert_allclose(_score(model, x, level), expected, rtol=RTOL, atol=1e-6)


def _edm_config(tmp_path, name):
  config = config_lib.Config(workdir=str(tmp_path / 'w'),
                             export=config_lib.ExportConfig(str(tmp_path / 'e'))).replace(
      data={'dataset': 'shapes', 'image_size': 16},
      model={'name': name, 'ngf': 4, 'num_scales': 10, 'sigma_begin': 50.0,
             'sigma_end': 0.01, 'scale_by_sigma': False, 'preconditioning': 'edm',
             'sigma_data': SIGMA_DATA, 'unet_norm': 'none'})
  config_lib.validate(config)
  return config


def test_the_flags_build_a_preconditioned_model_that_round_trips(tmp_path):
  config = _edm_config(tmp_path, 'refinenet')
  model = networks.build_model(config, (16, 16, 3))
  assert model.sigma_data == SIGMA_DATA
  np.testing.assert_allclose(model.output_sigmas, LADDER, rtol=1e-6)
  clone = CondRefineNetDilated.from_config(model.get_config()).build_for()
  assert clone.sigma_data == SIGMA_DATA
  plain = networks.build_model(config.replace(model={'preconditioning': 'none'}), (16, 16, 3))
  assert plain.sigma_data is None and plain.output_sigmas is None
  assert plain.count_params() == model.count_params()  # The parameterisation adds no weights.


def test_the_flags_build_a_preconditioned_unet_that_round_trips(tmp_path):
  config = _edm_config(tmp_path, 'unet')
  model = networks.build_model(config, (16, 16, 3))
  assert isinstance(model, ScoreUNet) and model.sigma_data == SIGMA_DATA
  assert not model.scale_by_sigma
  _randomise_output_layer(model)
  clone = ScoreUNet.from_config(model.get_config()).build_for()
  clone.set_weights(model.get_weights())
  x = np.random.default_rng(6).random((2, 16, 16, 3)).astype(np.float32)
  np.testing.assert_array_equal(_score(clone, x, 3), _score(model, x, 3))
  plain = networks.build_model(config.replace(model={'preconditioning': 'none',
                                                   'scale_by_sigma': True}), (16, 16, 3))
  assert plain.sigma_data is None
  assert plain.count_params() == model.count_params()


def test_sigma_data_needs_the_ladder():
  with pytest.raises(ValueError, match='needs a positive value and output_sigmas'):
    CondRefineNetDilated(4, 10, 16, 3, sigma_data=0.3)


@pytest.mark.parametrize('kwargs', [dict(sigma_data=0.3), dict(sigma_data=0.0, scale_by_sigma=False)])
def test_the_unet_refuses_sigma_data_with_the_1_over_sigma_output_or_nonpositive(kwargs):
  with pytest.raises(ValueError, match='needs a positive value and scale_by_sigma=False'):
    ScoreUNet(4, LADDER.tolist(), 16, 3, **kwargs)


# The U-Net (shapes.cfg's and shapes_sde.cfg's network) with EDM from the flags:
# test_shapes_sde_trains_with_edm_weighting_and_lognormal_sigma below.
@pytest.mark.slow  # 32 s; the flags build this model (test_the_flags_build_a_preconditioned_
# model_that_round_trips) and the trainer trains EDM from the flags (the test below).
@pytest.mark.parametrize('model_flags', [('--model=refinenet', '--conditional_norm=false')])
def test_shapes_trains_with_edm_from_the_command_line_flags(tmp_path, model_flags):
  config = config_from_flagfile('shapes', f'--workdir={tmp_path}/run', *TINY, '--image_size=16',
                                *model_flags, '--preconditioning=edm', '--scale_by_sigma=false',
                                '--sigma_data=0.385')
  assert config.model.preconditioning == 'edm' and config.model.sigma_data == 0.385
  state = train_loop.train(config)
  assert int(state.step.numpy()) == 2 and state.model.sigma_data == 0.385
  x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
  assert np.all(np.isfinite(_score(state.ema_model, x, 0)))


def test_the_continuous_unet_takes_edm_at_any_sigma():
  # --noise_embedding=fourier: σ itself is the second argument. Untrained, the
  # preconditioned U-Net is the Gaussian score −(x − ½)/(σ² + σ_d²) at σ between
  # and beyond the ladder's levels (a closed form, not the model's formula).
  keras.utils.set_random_seed(0)
  model = ScoreUNet(4, [50.0, 0.01], 16, 3, scale_by_sigma=False, norm='none',
                    sigma_data=SIGMA_DATA, continuous=True).build_for()
  x = np.random.default_rng(5).random((3, 16, 16, 3)).astype(np.float32)
  sigma = np.array([0.0137, 0.7, 31.0], np.float32)
  expected = -(x - 0.5) / (sigma[:, None, None, None]**2 + SIGMA_DATA**2)
  np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x, sigma)), expected, rtol=RTOL,
                             atol=1e-6)


def test_shapes_sde_trains_with_edm_weighting_and_lognormal_sigma(tmp_path):
  # EDM's training recipe on the continuous U-Net (Karras et al. 2022): the
  # preconditioned network, λ(σ) and log σ ~ N(P_mean, P_std²) over the VE range.
  config = config_from_flagfile('shapes_sde', f'--workdir={tmp_path}/run', *TINY,
                                '--image_size=16', '--preconditioning=edm',
                                '--scale_by_sigma=false', '--edm_weighting',
                                '--level_sampling=lognormal', '--level_log_mean=-1.9')
  loss_fn = train_step.loss_for(config)
  assert loss_fn.keywords['weighting'] == 'edm'
  assert loss_fn.keywords['log_sigma_normal'] == (-1.9, 1.2)
  assert loss_fn.keywords['sigma_data'] == config.model.sigma_data
  # The held-out loss keeps the paper's log-uniform σ, comparable between runs.
  assert 'log_sigma_normal' not in train_step.loss_for(config, uniform_levels=True).keywords
  state = train_loop.train(config)
  assert int(state.step.numpy()) == 2 and state.model.sigma_data == config.model.sigma_data
  x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
  assert np.all(np.isfinite(keras.ops.convert_to_numpy(
      state.ema_model(x, np.array([0.05, 5.0], np.float32)))))


@pytest.mark.parametrize('flags, message', [
    (['--edm_weighting'], '--edm_weighting: weights the output of --preconditioning=edm'),
    (['--edm_weighting', '--likelihood_weighting', '--preconditioning=edm',
      '--scale_by_sigma=false'], '--edm_weighting: and --likelihood_weighting are two weightings'),
    (['--level_sampling=lognormal', '--sde=vp', '--prior_mean=0'],
     "--level_sampling: lognormal with continuous_dsm draws σ over the VE SDE's range"),
    (['--preconditioning=edm', '--scale_by_sigma=false', '--model=mlp', '--dataset=gmm'],
     '--preconditioning: edm applies to --model=refinenet or unet'),
])
def test_edm_training_settings_that_do_not_fit_are_refused(flags, message):
  with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
    config_from_flagfile('shapes_sde', *flags)
