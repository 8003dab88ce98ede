"""Bad input: flags, image folders, SavedModel calls, mismatched workdirs.

Every case must fail (or skip) with a message that says what is wrong and how
to fix it, and must not touch what already exists. Flag-level cases run
in-process through `config.validate` (the exact code run.py calls) and a few
through the real command line; tests/test_cli.py holds more CLI cases.
"""

import json
import logging as py_logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT
from PIL import Image
from test_train_lib import tiny_config

from ncsn_tf import api
from ncsn_tf import config as config_lib
from ncsn_tf.data import images
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime import devices
from ncsn_tf.serving import export as export_lib
from ncsn_tf.training import loop as train_loop

IS_ROOT = hasattr(os, 'geteuid') and os.geteuid() == 0


def _config(tmp_path, **groups):
  base = config_lib.Config(name='t', workdir=str(tmp_path / 'w'),
                           export=config_lib.ExportConfig(str(tmp_path / 'e')))
  top = {k: groups.pop(k) for k in list(groups) if not isinstance(groups[k], dict)}
  import dataclasses
  return dataclasses.replace(base.replace(**groups), **top)


SHAPES = {'data': {'dataset': 'shapes'}, 'model': {'name': 'refinenet'}}
TWO_WORKERS = json.dumps({'cluster': {'worker': ['127.0.0.1:1', '127.0.0.1:2']},
                          'task': {'type': 'worker', 'index': 0}})


@pytest.mark.parametrize('groups,env,expected', [
    ({'model': {'sigma_begin': 1.0, 'sigma_end': 1.0}}, None, '--sigma_begin: must be > --sigma_end'),
    ({**SHAPES, 'data': {'dataset': 'shapes', 'image_size': 18}}, None, '--image_size: must be a multiple of 4'),
    ({**SHAPES, 'data': {'dataset': 'shapes', 'image_size': 8}}, None, '--image_size: must be a multiple of 4 and >= 16'),
    ({**SHAPES, 'model': {'name': 'mlp'}}, None, '--model: image datasets use --model=refinenet or unet'),
    ({'data': {'dataset': 'shapes', 'image_size': 28}, 'model': {'name': 'unet'}}, None,
     '--image_size: --model=unet needs a multiple of 8, got 28'),
    ({'model': {'name': 'unet'}}, None, '--model: toy datasets use --model=mlp'),
    ({'data': {'dataset': 'shapes'}, 'model': {'name': 'unet', 'unet_norm': 'batch'}}, None,
     "--unet_norm: must be one of group, none, got 'batch'"),
    ({'train': {'loss': 'esm'}, **SHAPES}, None, '--loss: esm needs the exact score'),
    ({**SHAPES, 'model': {'name': 'refinenet', 'conditional_norm': False, 'scale_by_sigma': False}},
     None, '--conditional_norm: false needs --scale_by_sigma'),
    ({'model': {'conditional_norm': False}}, None,
     '--conditional_norm: false applies to --model=refinenet only'),
    ({**SHAPES, 'model': {'name': 'refinenet', 'preconditioning': 'vp'}}, None,
     "--preconditioning: must be one of none, edm, got 'vp'"),
    ({'model': {'preconditioning': 'edm', 'scale_by_sigma': False}}, None,
     '--preconditioning: edm applies to --model=refinenet or unet'),
    ({**SHAPES, 'model': {'name': 'refinenet', 'preconditioning': 'edm'}}, None,
     '--preconditioning: edm scales the output itself; pass --scale_by_sigma=false'),
    ({**SHAPES, 'model': {'name': 'refinenet', 'preconditioning': 'edm', 'scale_by_sigma': False,
                          'sigma_data': 0.0}}, None, '--sigma_data: must be > 0'),
    ({'train': {'strategy': 'tpu'}}, None, '--strategy: must be one of auto, mirrored, multi_worker'),
    ({'train': {'strategy': 'multi_worker'}}, None, '--strategy: multi_worker needs the TF_CONFIG'),
    ({'train': {'strategy': 'multi_worker'}}, '{not json', '--strategy: TF_CONFIG is not valid JSON'),
    ({'train': {'strategy': 'multi_worker'}}, '{"task": {}}', '--strategy: TF_CONFIG must be'),
    ({'train': {'strategy': 'multi_worker', 'batch_size': 3}}, TWO_WORKERS,
     '--batch_size: (3) must be divisible by the number of workers (2)'),
    ({'train': {'strategy': 'multi_worker', 'num_cpu_replicas': 2}}, TWO_WORKERS,
     '--num_cpu_replicas: is for one machine'),
    ({'train': {'max_chunk_steps': 0}}, None, '--max_chunk_steps: must be >= 1'),
    ({'train': {'snapshot_freq': 0}}, None, '--snapshot_freq: must be >= 1'),
    ({'train': {'train_minutes': -1.0}}, None, '--train_minutes: must be >= 0'),
    ({'train': {'log_freq': 0}}, None, '--log_freq: must be >= 1'),
    ({'train': {'max_checkpoints': 0}}, None, '--max_checkpoints: must be >= 1'),
    ({'train': {'beta1': 1.0}}, None, '--beta1: must be in [0, 1)'),
    ({'train': {'lr_schedule': 'linear'}}, None, '--lr_schedule: must be one of constant, cosine'),
    ({'train': {'warmup_steps': -1}}, None, '--warmup_steps: must be >= 0'),
    ({'train': {'level_sampling': 'beta'}}, None,
     '--level_sampling: must be one of uniform, lognormal'),
    ({'train': {'level_log_std': 0.0}}, None, '--level_log_std: must be > 0'),
    ({'train': {'heldout_batches': -1}}, None, '--heldout_batches: must be >= 0'),
    ({'sampling': {'num_samples': 0}}, None, '--num_samples: must be >= 1'),
    ({'sampling': {'inpaint_mask': '/no/mask.png'}}, None, '--inpaint_mask: must be one of'),
    ({'seed': -1}, None, '--seed: must be >= 0'),
    ({'mode': 'inpaint'}, None, '--mode: inpaint needs an image --dataset'),
])
def test_invalid_configs_name_the_flag_and_the_fix(tmp_path, monkeypatch, groups, env, expected):
  if env is None:
    monkeypatch.delenv('TF_CONFIG', raising=False)
  else:
    monkeypatch.setenv('TF_CONFIG', env)
  with pytest.raises(config_lib.ConfigError) as info:
    api.validate(_config(tmp_path, **json.loads(json.dumps(groups))))
  assert expected in str(info.value)
  assert '\n' not in str(info.value)


def test_paths_that_cannot_be_written_or_read(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  cases = [
      (_config(tmp_path, workdir=str(blocker)), '--workdir: ', 'exists and is not a directory'),
      (_config(tmp_path, workdir=str(blocker / 'w')), '--workdir: ', 'is a file, not a directory'),
      (_config(tmp_path, export={'export_dir': str(blocker / 'e')}), '--export_dir: ', 'is a file'),
      (_config(tmp_path, data={'dataset': 'folder', 'data_path': str(blocker)},
               model={'name': 'refinenet'}), '--data_path: ', 'is not a directory'),
  ]
  for config, flag, expected in cases:
    with pytest.raises(config_lib.ConfigError, match=expected) as info:
      config_lib.validate(config)
    assert str(info.value).startswith(flag)
  assert blocker.read_text() == 'x'  # Nothing touched.


@pytest.mark.skipif(IS_ROOT, reason='root may write and read anything: permissions cannot fail')
def test_unwritable_workdir_and_unreadable_data_path(tmp_path):
  locked = tmp_path / 'locked'
  locked.mkdir()
  locked.chmod(0o500)
  unreadable = tmp_path / 'images'
  unreadable.mkdir()
  unreadable.chmod(0o000)
  try:
    with pytest.raises(config_lib.ConfigError, match='--workdir: .* is not writable'):
      config_lib.validate(_config(tmp_path, workdir=str(locked)))
    with pytest.raises(config_lib.ConfigError, match='--data_path: .* is not readable'):
      config_lib.validate(_config(tmp_path, data={'dataset': 'folder', 'data_path': str(unreadable)},
                                  model={'name': 'refinenet'}))
  finally:
    locked.chmod(0o700)
    unreadable.chmod(0o700)


def run_cli(*args):
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  env.pop('TF_CONFIG', None)
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'run.py'), *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300, env=env)


def test_cli_refuses_multi_worker_without_tf_config_in_one_line(tmp_path):
  result = run_cli(f'--workdir={tmp_path}/w', '--strategy=multi_worker')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'error: --strategy: multi_worker needs the TF_CONFIG environment variable (cluster and task); '
      'see docs/operating.md']


def test_cli_refuses_to_resume_a_different_model_and_loses_nothing(tmp_path):
  workdir, export_dir = tmp_path / 'w', tmp_path / 'e'
  config = config_lib.validate(config_lib.Config(
      name='default', workdir=str(workdir), model=config_lib.ModelConfig(ngf=8, num_layers=1),
      train=config_lib.TrainConfig(batch_size=8, train_steps=2, heldout_batches=0),
      export=config_lib.ExportConfig(str(export_dir))))
  train_loop.train(config)
  before = {name: os.path.getmtime(workdir / name) for name in ('config.json', 'checkpoints')}
  result = run_cli(f'--workdir={workdir}', f'--export_dir={export_dir}', '--ngf=16',
                   '--num_layers=1', '--batch_size=8', '--train_steps=4', '--heldout_batches=0')
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1 and 'Traceback' not in result.stderr
  assert '(--ngf 8 -> 16)' in lines[0] and 'pass a new --workdir or delete' in lines[0]
  assert {name: os.path.getmtime(workdir / name) for name in before} == before
  assert json.loads((workdir / 'config.json').read_text())['model']['ngf'] == 8
  assert tf.train.latest_checkpoint(str(workdir / 'checkpoints')).endswith('ckpt-2')


def test_resume_check_takes_a_field_missing_from_an_older_config_json_as_its_default(tmp_path):
  # A workdir written before --unet_norm existed trained a U-Net with GroupNorm.
  # Restoring it into the norm-free network would load the convolutions and
  # silently drop the GroupNorm weights, so the check must name the change.
  config = config_lib.Config(name='t', workdir=str(tmp_path), model=config_lib.ModelConfig(
      name='unet'))
  saved = json.loads(config.to_json())
  del saved['model']['unet_norm']
  assert config_lib.resume_mismatches(saved, config) == []
  norm_free = config.replace(model={'unet_norm': 'none'})
  assert config_lib.resume_mismatches(saved, norm_free) == ["--unet_norm 'group' -> 'none'"]


# --- image folders -----------------------------------------------------------------

def _good_images(root, n):
  rng = np.random.default_rng(0)
  for i in range(n):
    array = rng.integers(0, 256, size=(12 + i % 5, 10 + i % 3, 3), dtype=np.uint8)
    Image.fromarray(array).save(root / f'good_{i:03d}.{"png" if i % 2 else "jpg"}')


def _train_files(root):
  return images.folder_files(str(root), 'train')


def _count(dataset):
  return sum(int(batch.shape[0]) for batch in dataset)


def _folder(root, **kwargs):
  return images.image_dataset('folder', data_path=str(root), image_size=16, batch_size=1,
                              shuffle=False, repeat=False, **kwargs)


def test_empty_and_non_image_files_are_skipped_and_counted(tmp_path, caplog):
  _good_images(tmp_path, 40)
  (tmp_path / 'empty.png').write_bytes(b'')
  (tmp_path / 'notes.jpg').write_text('not an image')
  files = _train_files(tmp_path)
  bad = [f for f in files if os.path.basename(f) in ('empty.png', 'notes.jpg')]
  with caplog.at_level(py_logging.WARNING):
    good = images.check_folder_files(files, str(tmp_path))
  assert sorted(set(files) - set(good)) == sorted(bad)
  assert f'{len(bad)} of {len(files)} files' in caplog.text and 'skipping them' in caplog.text
  assert _count(_folder(tmp_path)) == len(files) - len(bad)


@pytest.mark.parametrize('kind', ['png', 'jpg'])
def test_truncated_images_are_dropped_when_decoding(tmp_path, kind):
  _good_images(tmp_path, 20)
  array = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
  path = tmp_path / f'truncated.{kind}'
  Image.fromarray(array).save(path)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 3])  # A valid header, then nothing.
  files = _train_files(tmp_path)
  assert str(path) in files and str(path) in images.check_folder_files(files)
  expected = len(files) - 1
  assert _count(_folder(tmp_path, random_flip=False)) == expected


def test_a_folder_of_mostly_bad_files_is_an_error_that_says_so(tmp_path):
  _good_images(tmp_path, 5)
  for i in range(10):
    (tmp_path / f'bad_{i}.png').write_text('<html>')
  with pytest.raises(images.CorruptImageFolderError, match=r'more than 10% are bad.*--data_path'):
    _folder(tmp_path)


# --- SavedModel signatures ---------------------------------------------------------

@pytest.fixture(scope='module')
def loaded_toy_model(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp('export')
  config = tiny_config(tmp_path / 'run', train_steps=0)
  state = checkpoints.create_state(config, devices.make_strategy())
  path = export_lib.export(state.ema_model, config, state.sigmas)
  return tf.saved_model.load(path)


@pytest.mark.parametrize('kwargs,error', [
    ({'x': tf.zeros([3, 5]), 'sigma_index': tf.zeros([3], tf.int32)}, 'shape|Shape|incompatible'),
    ({'x': tf.zeros([3, 2], tf.float64), 'sigma_index': tf.zeros([3], tf.int32)}, 'dtype|float64|double'),
    ({'x': tf.zeros([3, 2]), 'sigma_index': tf.zeros([3], tf.float32)}, 'dtype|float|int32'),
    ({'x': tf.zeros([2]), 'sigma_index': tf.zeros([2], tf.int32)}, 'shape|Shape|rank|incompatible'),
    ({'x': tf.zeros([3, 2]), 'sigma_index': tf.zeros([2], tf.int32)}, 'same batch size'),
    ({'x': tf.zeros([1, 2]), 'sigma_index': tf.constant([4])}, 'must be < the number of noise levels'),
])
def test_score_signature_rejects_wrong_shapes_and_dtypes(loaded_toy_model, kwargs, error):
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match=error):
    loaded_toy_model.signatures['score'](**kwargs)


def test_sample_signature_rejects_a_non_scalar_count(loaded_toy_model):
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
    loaded_toy_model.signatures['sample'](num_samples=tf.constant([2, 3]), seed=tf.constant(0))
