"""Tests for ncsn_tf.models.unet (the small noise-conditional U-Net).

Functional tests use a tiny width (ngf=4) at 16x16; the parameter count is
checked against a count written out from the layout in the module docstring.
"""

import keras
import numpy as np
import pytest

from ncsn_tf import config as config_lib
from ncsn_tf import noise
from ncsn_tf.data import shapes
from ncsn_tf.models.unet import group_count
from ncsn_tf.models.unet import input_scale
from ncsn_tf.models.unet import NORMS
from ncsn_tf.models.unet import ScoreUNet

SIGMAS = [5.0, 1.0, 0.2, 0.04]


def _inputs(image_size=16, channels=3, batch=4, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.0, 1.0, (batch, image_size, image_size, channels)).astype(np.float32)
  return x, np.arange(batch, dtype=np.int32) % len(SIGMAS)


def _randomise(model, seed=0):
  """Nonzero weights everywhere (the last convs start at zero)."""
  rng = np.random.default_rng(seed)
  for weight in model.weights:
    weight.assign(rng.normal(0.0, 0.1, weight.shape).astype(np.float32))


@pytest.fixture(scope='module')
def plain_model():
  """A randomised width-4 U-Net at 16x16x3 without the 1/σ output, built once."""
  model = ScoreUNet(4, SIGMAS, 16, 3, scale_by_sigma=False).build_for()
  _randomise(model)
  return model


def _expected_parameters(ngf, channels, mults=(1, 2, 2, 2), blocks=2, group_norm=True):
  """The layout of the module docstring, counted by hand."""
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  dense = lambda cin, cout: cin * cout + cout
  norm = lambda c: 2 * c if group_norm else 0  # GroupNorm's γ and β
  embed = 4 * ngf

  def block(cin, cout):
    return (norm(cin) + conv(3, cin, cout) + dense(embed, cout) + norm(cout)
            + conv(3, cout, cout) + (conv(1, cin, cout) if cin != cout else 0))

  total = dense(16, embed) + dense(embed, embed) + conv(3, channels, ngf)
  width, skips = ngf, [ngf]
  for level, mult in enumerate(mults):
    for _ in range(blocks):
      total += block(width, ngf * mult)
      width = ngf * mult
      skips.append(width)
    if level < len(mults) - 1:
      skips.append(width)  # the pooled map is a skip too
  total += 2 * block(width, width)
  for level in reversed(range(len(mults))):
    for _ in range(blocks + 1):
      total += block(width + skips.pop(), ngf * mults[level])
      width = ngf * mults[level]
    if level > 0:
      total += conv(3, width, width)
  return total + norm(width) + conv(3, width, channels)


@pytest.mark.parametrize('ngf, image_size, channels', [(16, 32, 3), (4, 16, 1)])
def test_parameter_count_follows_the_layout(ngf, image_size, channels):
  model = ScoreUNet(ngf, SIGMAS, image_size, channels).build_for()
  assert model.count_params() == _expected_parameters(ngf, channels)


def test_parameter_count_without_normalisation_follows_the_layout():
  model = ScoreUNet(16, SIGMAS, 32, 3, norm='none').build_for()
  assert model.count_params() == _expected_parameters(16, 3, group_norm=False)
  assert not any(isinstance(layer, keras.layers.GroupNormalization)
                 for layer in model._flatten_layers())


def test_config_knows_the_same_norms():
  # The config schema stays free of Keras, so it keeps its own copy of the choices.
  assert config_lib.UNET_NORMS == NORMS


def test_without_normalisation_the_stem_sees_the_input_scaled_per_level():
  model = ScoreUNet(4, SIGMAS, 16, 3, norm='none').build_for()
  seen = []
  stem_call = model.stem.call
  model.stem.call = lambda inputs: (seen.append(np.asarray(inputs)), stem_call(inputs))[1]
  x, index = _inputs()
  model(x, index)
  expected = (2.0 * x - 1.0) / np.sqrt(1.0 + 4.0 * np.asarray(SIGMAS)[index] ** 2)[:, None, None, None]
  np.testing.assert_allclose(seen[0], expected, rtol=1e-6)


def test_without_normalisation_logits_are_scaled_for_their_own_noise():
  # Logits are not stretched by 2x − 1: noise σ on unit-variance data, so
  # c_in = 1/sqrt(1 + σ²), not the image's 1/sqrt(1 + 4σ²).
  model = ScoreUNet(4, SIGMAS, 16, 3, logit_transform=True, norm='none').build_for()
  seen = []
  stem_call = model.stem.call
  model.stem.call = lambda inputs: (seen.append(np.asarray(inputs)), stem_call(inputs))[1]
  x, index = _inputs()
  model(x, index)
  expected = x / np.sqrt(1.0 + np.asarray(SIGMAS)[index] ** 2)[:, None, None, None]
  np.testing.assert_allclose(seen[0], expected, rtol=1e-6)


def test_input_scale_gives_noisy_shapes_about_unit_variance_at_every_level():
  # The claim behind norm='none': c_in(σ)·(2x̃ − 1), x̃ = x + σz, has about unit
  # variance from σ_1 = 50 down to 0.01. Closed form: (v + 4σ²) / (1 + 4σ²) with
  # v = Var(2x − 1) of the images. 786k values per level put the sampling error
  # of each std near 0.1%, so 1% is the tolerance.
  rng = np.random.default_rng(0)
  x = shapes.shapes_images(256, 32, seed=1).astype(np.float32) / 255.0
  data_variance = float(np.var(2.0 * x - 1.0))
  assert 0.5 < data_variance < 1.0  # flat light or dark backgrounds, mid-tone shapes
  for sigma in noise.geometric_sigmas(50.0, 0.01, 100)[::9]:
    noisy = x + sigma * rng.normal(size=x.shape).astype(np.float32)
    std = float(np.std((2.0 * noisy - 1.0) * np.asarray(input_scale(np.float32([sigma])))))
    expected = np.sqrt((data_variance + 4.0 * sigma ** 2) / (1.0 + 4.0 * sigma ** 2))
    assert std == pytest.approx(expected, rel=1e-2), sigma
    assert np.sqrt(data_variance) - 1e-2 < std < 1.0 + 1e-2


def test_shapes_cfg_width_has_the_documented_size():
  # docs/images.md quotes these sizes for tf_configs/shapes.cfg's network (ngf 16,
  # 32x32x3, --unet_norm=none) and for the same with GroupNorm.
  assert ScoreUNet(16, SIGMAS, 32, 3, norm='none').build_for().count_params() == 515_603
  assert ScoreUNet(16, SIGMAS, 32, 3).build_for().count_params() == 518_771


def test_group_count():
  assert [group_count(c) for c in (1, 4, 8, 16, 32, 64)] == [1, 1, 2, 4, 8, 8]


@pytest.mark.parametrize('norm', ['group', 'none'])
def test_starts_as_zero_score_with_float32_output(norm):
  x, index = _inputs()
  score = ScoreUNet(4, SIGMAS, 16, 3, norm=norm).build_for()(x, index)
  assert score.shape == x.shape and score.dtype == 'float32'
  assert np.all(np.asarray(score) == 0.0)  # zero-initialised output conv


def test_scale_by_sigma_divides_the_network_output_by_sigma_i(plain_model):
  x, index = _inputs()
  scaled = ScoreUNet(4, SIGMAS, 16, 3).build_for()
  scaled.set_weights(plain_model.get_weights())
  expected = np.asarray(plain_model(x, index)) / np.asarray(SIGMAS)[index][:, None, None, None]
  np.testing.assert_allclose(np.asarray(scaled(x, index)), expected, rtol=1e-5, atol=1e-6)


def test_output_depends_on_the_level(plain_model):
  # The same image at every level: the embedding must change the field itself,
  # not only its 1/σ scale (scale_by_sigma off).
  x, _ = _inputs(batch=1)
  x = np.repeat(x, len(SIGMAS), axis=0)
  outputs = list(np.asarray(plain_model(x, np.arange(len(SIGMAS), dtype=np.int32))))
  for a, b in zip(outputs, outputs[1:]):
    assert np.abs(a - b).max() > 1e-3 * np.abs(a).max()


def test_examples_are_independent(plain_model):
  # GroupNorm statistics are per example: a batch gives each image's own output.
  model = plain_model
  x, index = _inputs()
  batched = np.asarray(model(x, index))
  single = np.concatenate([np.asarray(model(x[i:i + 1], index[i:i + 1])) for i in range(len(x))])
  np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('norm', ['group', 'none'])
def test_config_round_trip_rebuilds_the_same_network(norm):
  model = ScoreUNet(4, SIGMAS, 16, 1, logit_transform=True, norm=norm).build_for()
  _randomise(model)
  clone = ScoreUNet.from_config(model.get_config()).build_for()
  clone.set_weights(model.get_weights())
  x, index = _inputs(channels=1)
  np.testing.assert_array_equal(np.asarray(clone(x, index)), np.asarray(model(x, index)))


def test_mixed_bfloat16_computes_in_bfloat16_and_returns_float32():
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy('mixed_bfloat16')
  try:
    model = ScoreUNet(4, SIGMAS, 16, 3).build_for()
  finally:
    keras.mixed_precision.set_global_policy(previous)
  _randomise(model)
  x, index = _inputs()
  assert model.stem.compute_dtype == 'bfloat16'
  assert model(x, index).dtype == 'float32'


@pytest.mark.parametrize('kwargs, message', [
    (dict(image_size=20), 'image_size must be divisible by 8'),
    (dict(image_size=18, channel_mults=(1, 2, 2)), 'image_size must be divisible by 4'),
    (dict(sigmas=[1.0, 0.0]), 'sigmas must be a non-empty list of positive floats'),
    (dict(norm='batch'), "norm must be one of group, none, got 'batch'"),
])
def test_bad_arguments_are_rejected(kwargs, message):
  arguments = {**dict(ngf=4, sigmas=SIGMAS, image_size=16, channels=3), **kwargs}
  with pytest.raises(ValueError, match=message):
    ScoreUNet(**arguments)


# --- continuous=True: call(x, σ) with σ float32 [N] -------------------------


@pytest.fixture(scope='module')
def continuous_model(plain_model):
  """plain_model's weights in a continuous U-Net (the same layers and parameters)."""
  model = ScoreUNet(4, SIGMAS, 16, 3, scale_by_sigma=False, continuous=True).build_for()
  model.set_weights(plain_model.get_weights())
  return model


# Small variants (8x8, two resolutions, one block) where the full layout is not the point.
_SMALL = dict(ngf=4, sigmas=SIGMAS, image_size=8, channels=3, channel_mults=(1, 2),
              num_res_blocks=1)


def test_continuous_shapes_parameters_and_zero_start():
  model = ScoreUNet(4, SIGMAS, 16, 3, continuous=True).build_for()
  assert model.count_params() == _expected_parameters(4, 3)  # the ladder network's layout
  x, _ = _inputs()
  score = model(x, np.array([7.0, 0.5, 0.03, 0.01], np.float32))  # off the ladder, beyond its ends
  assert score.shape == x.shape and score.dtype == 'float32'
  assert np.all(np.asarray(score) == 0.0)


def test_continuous_at_the_ladder_sigmas_is_the_ladder_network(plain_model, continuous_model):
  # The same σ reaches the same embedding, scalings and output: bit for bit,
  # with and without the 1/σ output, and with EDM preconditioning.
  x, index = _inputs()
  sigma = np.asarray(SIGMAS, np.float32)[index]
  np.testing.assert_array_equal(np.asarray(continuous_model(x, sigma)),
                                np.asarray(plain_model(x, index)))
  x, index = _inputs(image_size=8)
  for kwargs in (dict(), dict(scale_by_sigma=False, sigma_data=0.5, norm='none')):
    ladder = ScoreUNet(**_SMALL, **kwargs).build_for()
    _randomise(ladder, seed=2)
    continuous = ScoreUNet(**_SMALL, continuous=True, **kwargs).build_for()
    continuous.set_weights(ladder.get_weights())
    np.testing.assert_array_equal(np.asarray(continuous(x, sigma)), np.asarray(ladder(x, index)))


def test_continuous_output_is_smooth_in_sigma_between_levels(continuous_model):
  # Around σ_m = sqrt(σ_1 σ_2), halfway between two levels in log σ, with steps
  # h in log σ: a smooth field has first differences f(σe^h) − f(σe^−h) ∝ h and
  # second differences ∝ h², so halving h halves the first and quarters the
  # second (measured 1.97 and 3.97; a network that snapped to the nearest level
  # would give 0 or a jump). h = 0.01 keeps the top embedding frequency (32 rad
  # per unit of log σ) in the Taylor regime, and the second difference (~4e-6
  # of an output of ~0.3) well above float32 rounding (~1e-7).
  x, _ = _inputs(batch=1)
  middle = np.sqrt(SIGMAS[1] * SIGMAS[2])
  first, second = [], []
  for h in (0.01, 0.005):
    sigma = (middle * np.exp([-h, 0.0, h])).astype(np.float32)
    f = np.asarray(continuous_model(np.repeat(x, 3, axis=0), sigma), np.float64)
    first.append(np.abs(f[2] - f[0]).max())
    second.append(np.abs(f[2] - 2.0 * f[1] + f[0]).max())
  assert first[1] > 0 and 1.8 < first[0] / first[1] < 2.2
  assert second[1] > 0 and 3.5 < second[0] / second[1] < 4.5


def test_continuous_config_round_trips():
  model = ScoreUNet(**{**_SMALL, 'channels': 1}, logit_transform=True, continuous=True).build_for()
  _randomise(model)
  config = model.get_config()
  assert config['continuous'] is True
  clone = ScoreUNet.from_config(config).build_for()
  clone.set_weights(model.get_weights())
  x, _ = _inputs(image_size=8, channels=1)
  sigma = np.array([3.0, 0.3, 0.07, 0.02], np.float32)
  np.testing.assert_array_equal(np.asarray(clone(x, sigma)), np.asarray(model(x, sigma)))
