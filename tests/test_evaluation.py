"""--mode=eval and --mode=stats end to end: a tiny shapes run swept over its
checkpoints with a small random Inception, reference statistics, metrics.json
and TensorBoard contents, and the toy sweep keeping its exact metrics.

The numbers of a random network are meaningless; what is checked is the path:
shapes, provenance, streaming, determinism, and the reference statistics
against an independent numpy computation on the same images.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT
from tensorboard.backend.event_processing import event_accumulator

from ncsn_tf import config as config_lib
from ncsn_tf.cli import modes
from ncsn_tf.data import shapes
from ncsn_tf.evaluation import images as image_eval
from ncsn_tf.metrics import image as image_metrics
from ncsn_tf.training import loop as train_loop

EVAL_SAMPLES = 16
REFERENCE_IMAGES = 64


def tiny_shapes_config(workdir, mode='eval', **eval_fields):
  return config_lib.validate(config_lib.Config(
      name='tiny_shapes', workdir=str(workdir), mode=mode,
      data=config_lib.DataConfig(dataset='shapes', image_size=16),
      model=config_lib.ModelConfig(name='refinenet', sigma_begin=1.0, sigma_end=0.01,
                                   num_scales=3, ngf=4),
      train=config_lib.TrainConfig(batch_size=8, train_steps=2, snapshot_freq=1, log_freq=1,
                                   heldout_batches=1),
      sampling=config_lib.SamplingConfig(n_steps_each=2, step_lr=2e-5, summary_samples=0,
                                         num_samples=8, sample_batch_size=8),
      eval=config_lib.EvalConfig(**{
          'num_samples': EVAL_SAMPLES, 'batch_size': 8, 'checkpoints': 'all',
          'inception_kind': 'tiny_random', 'reference_images': REFERENCE_IMAGES, **eval_fields}),
      export=config_lib.ExportConfig(str(workdir) + '_export')))


@pytest.fixture(scope='module')
def swept_run(tmp_path_factory):
  """Trains 2 steps (checkpoints 1 and 2), then --mode=eval --eval_checkpoints=all."""
  workdir = tmp_path_factory.mktemp('shapes_eval')
  config = tiny_shapes_config(workdir)
  # No held-out loss while training (one trace less): the eval computes it.
  train_loop.train(config.replace(mode='train', train={'heldout_batches': 0}))
  returned = modes.run_eval(config)
  return config, returned


def test_sweep_writes_one_entry_per_checkpoint_with_provenance(swept_run):
  config, returned = swept_run
  metrics = json.loads(open(os.path.join(config.workdir, 'metrics.json')).read())
  assert metrics == json.loads(json.dumps(returned))
  assert sorted(metrics['checkpoints'], key=int) == ['1', '2']
  # The latest checkpoint's entry is also at the top level.
  assert metrics['step'] == 2
  assert {k: v for k, v in metrics.items() if k != 'checkpoints'} == metrics['checkpoints']['2']
  for step, entry in metrics['checkpoints'].items():
    assert entry['step'] == int(step)
    assert entry['num_samples'] == EVAL_SAMPLES and entry['nonfinite_samples'] == 0
    assert entry['feature_source'] == {'name': 'tiny_random_inception(seed=0)',
                                       'kind': 'tiny_random', 'path': None,
                                       'comparable_with_published': False}
    ref = entry['reference_stats']
    assert ref['num_images'] == REFERENCE_IMAGES and ref['split'] == 'train'
    assert ref['dataset'] == 'shapes' and ref['image_size'] == 16
    assert os.path.isfile(ref['path']) and ref['path'].startswith(
        os.path.join(os.path.abspath(config.workdir), 'reference_stats'))
    assert np.isfinite(entry['heldout_loss']) and len(entry['heldout_loss_per_sigma']) == 3
    inception_score = entry['inception_score']
    assert inception_score['splits'] == 10
    assert 1.0 <= inception_score['mean'] <= 10.0  # 1 <= IS <= K (10 classes).
    assert np.isfinite(inception_score['std']) and inception_score['std'] >= 0
    # Untrained samples are far from the data; FID is a squared distance.
    assert entry['fid'] > 0 and np.isfinite(entry['fid'])
    kid = entry['kid']
    assert np.isfinite(kid['mean']) and kid['std'] >= 0
    assert kid['subset_size'] == EVAL_SAMPLES and kid['num_features'] == [EVAL_SAMPLES,
                                                                          REFERENCE_IMAGES]
    assert entry['sampler']['n_steps_each'] == 2
  # Different weights, same sampler seeds: different samples, different FID.
  assert metrics['checkpoints']['1']['fid'] != metrics['checkpoints']['2']['fid']


def test_tensorboard_has_the_metrics_per_checkpoint(swept_run):
  config, returned = swept_run
  acc = event_accumulator.EventAccumulator(os.path.join(config.workdir, 'tensorboard'),
                                           size_guidance={event_accumulator.TENSORS: 0,
                                                          event_accumulator.IMAGES: 0})
  acc.Reload()
  tags = set(acc.Tags()['tensors'])
  assert {'eval/fid', 'eval/inception_score', 'eval/inception_score_std', 'eval/kid',
          'eval/kid_std', 'eval/heldout_loss', 'eval/settings', 'eval/samples'} <= tags
  for tag, key in (('eval/fid', lambda m: m['fid']),
                   ('eval/inception_score', lambda m: m['inception_score']['mean']),
                   ('eval/kid', lambda m: m['kid']['mean']),
                   ('eval/heldout_loss', lambda m: m['heldout_loss'])):
    events = acc.Tensors(tag)
    assert [e.step for e in events] == [1, 2]
    for e in events:
      expected = key(returned['checkpoints'][str(e.step)])
      np.testing.assert_allclose(float(tf.make_ndarray(e.tensor_proto)), expected, rtol=1e-6)
  settings = json.loads(acc.Tensors('eval/settings')[-1].tensor_proto.string_val[0])
  assert settings['num_samples'] == EVAL_SAMPLES
  assert settings['feature_source']['comparable_with_published'] is False
  assert settings['reference_stats']['path'] == returned['reference_stats']['path']


def test_reference_statistics_match_numpy_on_the_same_images(swept_run):
  """The cached statistics are those of the first 8-bit training images, no noise or flips."""
  config, returned = swept_run
  with np.load(returned['reference_stats']['path']) as data:
    mu, sigma, features = data['mu'], data['sigma'], data['features']
    assert str(data['extractor']) == 'tiny_random_inception(seed=0)'
  images = shapes.shapes_split_images('train', image_size=16)[:REFERENCE_IMAGES] / 255.0
  extractor = image_eval.build_extractor(config.eval)
  expected_features, _ = extractor(images.astype(np.float32))
  np.testing.assert_allclose(features, expected_features, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(mu, expected_features.astype(np.float64).mean(0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(sigma, np.cov(expected_features.astype(np.float64), rowvar=False),
                             rtol=1e-3, atol=1e-6)

  # --mode=stats to an explicit path writes the same statistics, loadable by
  # TTUR-style readers (keys mu, sigma).
  path = os.path.join(config.workdir, 'explicit_stats.npz')
  written = modes.run_stats(config.replace(mode='stats', eval={'reference_stats': path}))
  assert written == path
  mu2, sigma2 = image_metrics.load_statistics(path)
  np.testing.assert_allclose(mu2, mu, rtol=1e-6)
  np.testing.assert_allclose(sigma2, sigma, rtol=1e-6, atol=1e-9)


def test_checkpoint_selection(swept_run):
  config, _ = swept_run
  pick = lambda which: sorted(image_eval.select_checkpoints(  # noqa: E731
      config.replace(eval={'checkpoints': which})))
  assert pick('all') == [1, 2]
  assert pick('latest') == [2]
  assert pick('1') == [1] and pick('2,1') == [1, 2]
  with pytest.raises(FileNotFoundError, match=r'no checkpoint for step\(s\) \[3\].*kept: \[1, 2\]'):
    pick('3')
  with pytest.raises(FileNotFoundError, match='no checkpoint in'):
    image_eval.select_checkpoints(config.replace(workdir=config.workdir + '_none'))


class _Named:
  def __init__(self, name):
    self.name = name


def test_reference_files_from_another_network_are_refused(tmp_path):
  rng = np.random.default_rng(0)
  mu, sigma = rng.normal(size=4), np.eye(4)
  ttur = image_metrics.save_statistics(tmp_path / 'fid_stats_ttur.npz', mu, sigma)
  ours = image_metrics.save_statistics(tmp_path / 'ours.npz', mu, sigma, extractor='tiny')
  # A TTUR file (no extractor entry) is FID-Inception statistics.
  loaded = image_eval.load_reference(ttur, _Named('fid_inception_2015'))
  np.testing.assert_array_equal(loaded.mu, mu)
  assert loaded.features is None and loaded.info['extractor'] is None
  with pytest.raises(ValueError, match='TTUR statistics file.*uses keras_inception_v3'):
    image_eval.load_reference(ttur, _Named('keras_inception_v3'))
  with pytest.raises(ValueError, match='holds statistics of tiny features'):
    image_eval.load_reference(ours, _Named('fid_inception_2015'))
  config = tiny_shapes_config(tmp_path / 'w', reference_stats=str(tmp_path / 'missing.npz'))
  with pytest.raises(FileNotFoundError, match='--reference_stats file not found.*--mode=stats'):
    image_eval.reference_for(config, _Named('tiny'))


@pytest.mark.parametrize('flags,expected', [
    (['--mode=eval'], '--inception_path: is required for --mode=eval with --inception_kind=fid_graph: '
                      'classify_image_graph_def.pb from http://download.tensorflow.org'),
    (['--mode=stats', '--inception_kind=keras'], '--inception_path: is required for --mode=stats'),
    (['--eval_checkpoints=newest'], '--eval_checkpoints: must be latest, all or comma-separated'),
    (['--inception_kind=v4'], '--inception_kind: must be one of'),
    (['--eval_samples=1'], '--eval_samples: must be 0 (held-out loss only) or >= 2'),
])
def test_invalid_eval_flags_fail_with_one_line(tmp_path, flags, expected):
  cfg = os.path.join(REPO_ROOT, 'tf_configs', 'shapes.cfg')
  result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'run.py'), f'--flagfile={cfg}',
                           f'--workdir={tmp_path}/w', *flags], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and expected in lines[0], result.stderr


def test_toy_sweep_keeps_exact_metrics_per_checkpoint(tmp_path):
  config = config_lib.validate(config_lib.Config(
      name='tiny_toy', workdir=str(tmp_path), mode='eval',
      model=config_lib.ModelConfig(sigma_begin=10.0, sigma_end=1.0, num_scales=3, ngf=16,
                                   num_layers=1),
      train=config_lib.TrainConfig(batch_size=32, train_steps=4, snapshot_freq=2, log_freq=2,
                                   heldout_batches=1),
      sampling=config_lib.SamplingConfig(n_steps_each=2, num_samples=64),
      eval=config_lib.EvalConfig(checkpoints='all'),
      export=config_lib.ExportConfig(str(tmp_path) + '_export')))
  train_loop.train(config.replace(mode='train'))
  modes.run_eval(config)
  metrics = json.loads((tmp_path / 'metrics.json').read_text())
  # The keys the demo test reads stay at the top level (latest checkpoint).
  assert metrics['step'] == 4
  assert set(metrics['mixture_weights']) >= {'true', 'annealed_learned', 'langevin_exact'}
  assert np.isfinite(metrics['relative_score_error_sigma_min'])
  assert sorted(metrics['checkpoints'], key=int) == ['2', '4']
  for step, entry in metrics['checkpoints'].items():
    assert entry['step'] == int(step)
    assert len(entry['fisher_divergence_per_sigma']) == 3
    assert np.isfinite(entry['heldout_loss'])
  assert 'fid' not in metrics and not os.path.exists(tmp_path / 'reference_stats')
