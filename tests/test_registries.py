"""The registries people extend: datasets, SDEs, samplers, networks, served signatures.

Each refuses a bad entry at registration (one line, naming what is wrong), and the
Config's checks read them: a registered name becomes a valid flag value, an
unregistered one is refused naming the flag. Registrations made here are undone,
so other tests see the builtins only.
"""

import dataclasses

import numpy as np
import pytest

from ncsn_tf import api
from ncsn_tf import catalog
from ncsn_tf import config as config_lib
from ncsn_tf import noise
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.models import registry as networks
from ncsn_tf.sampling import samplers
from ncsn_tf.sampling.samplers import registry as sampler_registry
from ncsn_tf.serving import signatures


@pytest.fixture(name='registered')
def _registered(monkeypatch):
  """Registrations inside the test, removed after it."""
  monkeypatch.setattr(catalog, '_DATASETS', dict(catalog._DATASETS))  # pylint: disable=protected-access
  monkeypatch.setattr(noise.sde, '_SDES', dict(noise.sde._SDES))  # pylint: disable=protected-access
  monkeypatch.setattr(sampler_registry, '_SAMPLERS', dict(sampler_registry._SAMPLERS))  # pylint: disable=protected-access
  monkeypatch.setattr(networks, '_NETWORKS', dict(networks._NETWORKS))  # pylint: disable=protected-access


def _ones(split, image_size):
  count = {'train': 8, 'test': 4}[split]
  return np.full([count, image_size, image_size, 1], 200, np.uint8), np.arange(count) % 2


def _base(tmp_path, **groups):
  config = config_lib.Config(name='t', workdir=str(tmp_path / 'w'),
                             export=config_lib.ExportConfig(str(tmp_path / 'e')))
  return config.replace(**groups)


def test_a_registered_dataset_is_valid_and_feeds_the_pipeline(registered, tmp_path):
  catalog.register(catalog.DatasetSpec('ones', 'memory', channels=1, default_size=8,
                                       size_multiple=8, min_size=8, num_classes=2, load=_ones))
  config = api.validate(_base(tmp_path, data={'dataset': 'ones', 'image_size': 8},
                              model={'name': 'unet', 'ngf': 4}, train={'batch_size': 4}))
  assert data_lib.data_shape(config.data) == (8, 8, 1) and data_lib.num_classes(config.data) == 2
  images, labels = next(iter(data_lib.dataset_fn(config, with_labels=True, shuffle=False)()))
  assert images.shape == (4, 8, 8, 1) and set(labels.numpy()) <= {0, 1}
  # Dequantised 200/255 pixels: within one 1/256 bin above 200/256.
  np.testing.assert_array_less(np.abs(images.numpy() - (200 + 0.5) / 256), 0.5 / 256 + 1e-6)
  with pytest.raises(config_lib.ConfigError, match=r'--image_size: --dataset=ones needs a multiple of 8'):
    api.validate(_base(tmp_path, data={'dataset': 'ones', 'image_size': 12},
                       model={'name': 'unet'}))


@pytest.mark.parametrize('spec,message', [
    (catalog.DatasetSpec('gmm', 'toy'), "dataset 'gmm' is already registered"),
    (catalog.DatasetSpec('x', 'ftp'), 'source must be one of toy, tfds, folder, memory'),
    (catalog.DatasetSpec('x', 'memory', channels=1), 'a memory source needs load'),
    (catalog.DatasetSpec('x', 'tfds', channels=3), 'a tfds source needs tfds_name'),
    (catalog.DatasetSpec('x', 'folder', channels=2), 'images have 1 or 3 channels'),
    (catalog.DatasetSpec('x', 'toy', judge='eyeball'), 'judge must be one of'),
])
def test_bad_dataset_rows_are_refused_in_one_line(registered, spec, message):
  with pytest.raises(ValueError, match=message) as error:
    catalog.register(spec)
  assert '\n' not in str(error.value)
  assert catalog.names()[:5] == ('gmm', 'banana', 'rings', 'grid', 'gmm8')


def test_a_registered_sde_is_built_from_the_model_settings(registered, tmp_path):
  noise.register_sde('ve2', lambda m: noise.VESDE(m.sigma_end, 2 * m.sigma_begin))
  config = _base(tmp_path, model={'sde': 've2', 'noise_embedding': 'fourier', 'sigma_begin': 5.0,
                                  'sigma_end': 0.1}, train={'loss': 'continuous_dsm'},
                 sampling={'sampler': 'heun', 'sampling_steps': 4})
  api.validate(config)
  assert noise.build_sde(config.model).sigma_max == 10.0
  with pytest.raises(ValueError, match="an SDE named 've2' is already registered"):
    noise.register_sde('ve2', lambda m: None)
  with pytest.raises(config_lib.ConfigError, match="^--sde: must be one of none, ve, vp, subvp, ve2, got 'ou'$"):
    api.validate(config.replace(model={'sde': 'ou'}))


def _sample(score_fn, sde, x_init, seed, condition=None, callback=None, *, num_steps=3):
  return x_init, num_steps


def _check(sde, *, num_steps):
  if num_steps < 2:
    raise samplers.SettingError('num_steps', f'must be >= 2, got {num_steps}')


def test_a_registered_sampler_reads_its_settings_from_the_config(registered, tmp_path):
  samplers.register(samplers.SamplerSpec('twice', _sample, _check, {'num_steps': 'sampling_steps'},
                                         doc='a test sampler'))
  config = _base(tmp_path, model={'sde': 've', 'noise_embedding': 'fourier'},
                 train={'loss': 'continuous_dsm'}, sampling={'sampler': 'twice', 'sampling_steps': 5})
  api.validate(config)
  assert samplers.describe(config.sampling) == 'twice(num_steps=5)'
  # The sampler's own check, reported naming the flag its setting reads.
  with pytest.raises(config_lib.ConfigError, match=r'^--sampling_steps: must be >= 2, got 1$'):
    api.validate(config.replace(sampling={'sampling_steps': 1}))
  # A ladder network cannot serve an SDE sampler.
  with pytest.raises(config_lib.ConfigError, match='--sampler: twice needs a continuous-σ model'):
    api.validate(_base(tmp_path, sampling={'sampler': 'twice'}))


@pytest.mark.parametrize('spec,message', [
    (samplers.SamplerSpec('ald', _sample, _check, {}, doc=''), "'ald' is already registered"),
    (samplers.SamplerSpec('x', _sample, _check, {'steps': 'sampling_steps'}, doc=''),
     "setting 'steps' is not a keyword-only parameter"),
    (samplers.SamplerSpec('x', _sample, _check, {'num_steps': 'num_stepz'}, doc=''),
     "reads --num_stepz, which is not a setting"),
    (samplers.SamplerSpec('x', _sample, _check, {}, doc='', start='zeros'), 'start must be one of'),
])
def test_bad_sampler_specs_are_refused_at_registration(registered, spec, message):
  with pytest.raises(ValueError, match=message):
    samplers.register(spec)


def test_networks_say_what_data_and_noise_they_take(registered, tmp_path):
  assert networks.names() == ('mlp', 'refinenet', 'unet')
  with pytest.raises(config_lib.ConfigError, match=r"^--model: toy datasets use --model=mlp, got 'unet'$"):
    api.validate(_base(tmp_path, model={'name': 'unet'}))
  with pytest.raises(config_lib.ConfigError,
                     match=r"^--noise_embedding: fourier applies to --model=mlp or unet, got 'refinenet'$"):
    api.validate(_base(tmp_path, data={'dataset': 'shapes'},
                       model={'name': 'refinenet', 'noise_embedding': 'fourier', 'sde': 've'},
                       train={'loss': 'continuous_dsm'}))
  tiny = dataclasses.replace(networks.get('unet'), name='tiny_unet')
  networks.register(tiny)
  api.validate(_base(tmp_path, data={'dataset': 'shapes'}, model={'name': 'tiny_unet'}))
  with pytest.raises(ValueError, match='data must be one of'):
    networks.register(dataclasses.replace(tiny, name='x', data='audio'))


def test_signatures_refuse_a_second_entry_of_one_name():
  with pytest.raises(ValueError, match="'score'"):
    signatures.register(signatures.get_signature('score'))
