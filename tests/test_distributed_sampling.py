"""Sampling on several devices (ncsn_tf/sampling/distributed.py): MirroredStrategy over the
two logical CPUs of conftest against one device, and two worker processes.

Tolerance of "the same samples": float32 round-off. The chain, its noise and its
batch statistics are one device's; only the score's rows are evaluated in two
parts, which may round differently from one call on the whole batch (other
kernels, other fusions), and a chain carries such differences on. Measured with
the exact scores below: at most 4e-6 on samples of magnitude up to 15 (a few
float32 ulps there, 9.5e-7 at 8), about what a one-ulp change of the chain's
starting points moves them (2e-6); the tests allow 2e-5. The adaptive ODE solver
agrees within its tolerance (see its test).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT
from test_image_training import config_from_flagfile

from ncsn_tf.cli import modes
from ncsn_tf.data import toy
from ncsn_tf.evaluation import images as image_eval
from ncsn_tf.lab import sde_samplers as experiments_sde
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime import devices
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import distributed
from ncsn_tf.sampling import draw
from ncsn_tf.sampling import langevin

ATOL = 2e-5
#: A continuous VE toy (tf_configs/toy_gmm_sde.cfg) with a tiny network, split over 2 CPUs.
TINY = ('--ngf=16', '--num_layers=1', '--num_cpu_replicas=2', '--batch_size=16', '--sampler=ald',
        '--n_steps_each=2', '--num_samples=11', '--sample_batch_size=4', '--num_snapshots=2')
# 11 samples in batches of 4, 4 and 3: the last splits 1 + 2 over the replicas.


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(config, strategy, state): the tiny run's weights mirrored on both CPUs, one checkpoint."""
  workdir = tmp_path_factory.mktemp('distributed')
  config = config_from_flagfile('toy_gmm_sde', f'--workdir={workdir}', *TINY)
  strategy = devices.strategy_for(config)
  state = checkpoints.create_state(config, strategy)
  checkpoints.write_config_json(config)
  state.checkpoint().save(os.path.join(checkpoints.checkpoint_dir(config), 'ckpt'))
  return config, strategy, state


def test_the_runs_strategy_is_trainings_and_the_score_lands_on_both_devices_in_row_order(run):
  config, strategy, state = run
  assert strategy is devices.make_strategy(2, 'auto')  # The object training uses.
  assert isinstance(strategy, tf.distribute.MirroredStrategy)
  assert devices.local_replicas(strategy) == 2
  assert distributed.worker_layout(strategy) == (0, 1)
  sharded = distributed.shard(state.score_model, strategy)
  assert distributed.shard(state.score_model, strategy) is sharded  # Trace reuse.
  assert distributed.shard(sharded, strategy) is sharded
  assert distributed.shard(state.score_model, tf.distribute.get_strategy()) is state.score_model
  assert sharded.sigmas is state.score_model.sigmas and sharded.is_continuous
  x = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
  sigma = np.geomspace(0.01, 20.0, 7).astype(np.float32)
  for n, rows in ((7, [3, 4]), (1, [0, 1])):  # Uneven, and a replica without rows.
    parts = sharded.per_replica('score_sigma', x[:n], sigma[:n])
    assert [p.device.split(':')[-2:] for p in parts] == [['CPU', '0'], ['CPU', '1']]
    assert [len(p) for p in parts] == rows
    expected = state.score_model.score_sigma(x[:n], sigma[:n]).numpy()
    np.testing.assert_allclose(np.concatenate(parts), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sharded.score_sigma(x[:n], sigma[:n]), expected, rtol=1e-6,
                               atol=1e-7)
  # Inside a graph each replica reads its own copy of the mirrored weights.
  traced = tf.function(sharded.score_sigma).get_concrete_function(
      tf.TensorSpec([None, 2]), tf.TensorSpec([None]))
  captured = {c.device.split(':')[-1] for c in traced.captured_inputs}
  assert captured == {'0', '1'} and len(traced.captured_inputs) == 2 * len(state.ema_model.weights)


def test_a_model_with_per_example_labels_is_not_split(run):
  _, strategy, _ = run

  class Labelled:  # The per-row state of guidance (sampling/guidance.py).
    labels = tf.zeros([4], tf.int32)

  model = Labelled()
  assert distributed.shard(model, strategy) is model


@pytest.fixture(scope='module')
def exact(run):
  config, strategy, _ = run
  dist = toy.get_toy(config.data.dataset)
  model = ScoreModel(experiments_sde.exact_network(dist), checkpoints.ladder(config), continuous=True)
  return model, distributed.shard(model, strategy)


@pytest.mark.parametrize('settings', [
    dict(sampler='ald', n_steps_each=3),
    dict(sampler='pc', predictor='reverse_diffusion', corrector='langevin', sampling_steps=30),
    dict(sampler='pc', predictor='euler_maruyama', corrector='ald', sampling_steps=20),
    dict(sampler='pc', predictor='ancestral', corrector='none', sampling_steps=20),
    dict(sampler='ode', ode_rtol=1e-5, ode_atol=1e-5),
    dict(sampler='heun', sampling_steps=8),
], ids=lambda s: '-'.join(str(s[k]) for k in ('sampler', 'predictor', 'corrector') if k in s))
def test_every_sampler_gives_one_devices_samples_on_two(run, exact, settings):
  """37 samples (18 + 19 rows) of the paper's mixture with its exact score."""
  config, _, _ = run
  config = config.replace(sampling=settings)
  one, two = (configured.ConfiguredSampler(config, model, (2,)) for model in exact)
  x_one, _, nfe_one = one.sample(37, 5, index=6)
  x_two, _, nfe_two = two.sample(37, 5, index=6)
  # PC's corrector averages its step over the whole batch and the ODE takes its
  # steps from the whole batch's error: the same on both, so the same NFE too.
  assert int(nfe_one) == int(nfe_two)
  if settings['sampler'] == 'ode':
    # The solver's error estimate is the difference of two nearly equal
    # solutions, so round-off changes it by up to ~10% (ulp(8) / 1e-5) and with
    # it the step sizes: both solves are within the tolerance, not bit-equal.
    # Measured: 0.44 of one tolerance, atol + rtol |x|; allowed: two.
    tolerance = 2 * (settings['ode_atol'] + settings['ode_rtol'] * np.abs(x_one))
    assert np.all(np.abs(x_two - x_one) <= tolerance), np.max(np.abs(x_two - x_one) / tolerance)
  else:
    np.testing.assert_allclose(x_two, x_one, atol=ATOL, rtol=0)
  assert np.abs(x_one).max() > 1.0  # Samples, not a collapsed chain.
  x_other, _, _ = two.sample(37, 5, index=7)
  assert np.abs(x_other - x_one).max() > 0.1  # The seed matters: the comparison can fail.


def test_draw_samples_and_sample_mode_on_the_mirrored_strategy(run):
  """draw_samples in uneven batches, the evaluator's batches, and --mode=sample restoring
  into the run's strategy."""
  config, strategy, state = run
  for name in ('ald', 'heun'):
    settings = config.replace(sampling={'sampler': name, 'sampling_steps': 6})
    sample = lambda **kw: draw.draw_samples(settings, state.score_model, state.sigmas, num=11,
                                           seed=3, show_progress=False, return_nfe=True, **kw)
    samples, trajectory, nfe = sample()
    samples_2, trajectory_2, nfe_2 = sample(strategy=strategy)
    assert samples_2.shape == (11, 2) and nfe_2 == nfe
    np.testing.assert_allclose(samples_2, samples, atol=ATOL, rtol=0)
    np.testing.assert_allclose(trajectory_2, trajectory, atol=ATOL, rtol=0)
    if name == 'ald':
      ald_samples = samples_2
  # Snapshots reuse the split sampler's trace (shard returns the same object).
  traces = langevin.annealed_langevin_dynamics.experimental_get_tracing_count()
  again = draw.draw_samples(config, state.score_model, state.sigmas, num=11, seed=4,
                             show_progress=False, strategy=strategy)[0]
  assert langevin.annealed_langevin_dynamics.experimental_get_tracing_count() == traces
  assert not np.allclose(again, ald_samples)
  # The evaluator's batches (--mode=eval's FID samples), 11 in full batches of 4, cut.
  ev_config = config.replace(eval={'batch_size': 4})
  one, two = (list(image_eval.ImageEvaluator(ev_config, state.score_model, state.sigmas, None,
                                             strategy=s)._sample_batches(11))
              for s in (None, strategy))
  assert [len(b) for b in two] == [4, 4, 3]
  np.testing.assert_allclose(np.concatenate(two), np.concatenate(one), atol=ATOL, rtol=0)
  # --mode=sample: restore_for_inference(config, the run's strategy), draw, write.
  out_dir = modes.run_sample(config.replace(mode='sample'))
  with np.load(os.path.join(out_dir, 'samples.npz')) as written:
    reference = draw.draw_samples(config, state.score_model, state.sigmas, num=11,
                                   seed=config.seed, show_progress=False)
    np.testing.assert_allclose(written['samples'], reference[0], atol=ATOL, rtol=0)
    assert written['trajectory'].shape == (2, 11, 2)


def test_batches_in_order_on_one_worker_draws_each_batch_once():
  drawn = []

  def draw(k):
    drawn.append(k)
    return {'rows': np.full([3], k)}

  out = list(distributed.batches_in_order(None, [3, 3, 3], draw, cross_worker=True))
  assert [k for k, _ in out] == drawn == [0, 1, 2]
  assert [b['rows'].tolist() for _, b in out] == [[0] * 3, [1] * 3, [2] * 3]


class _FakeWorker:
  """Worker `index` of two (one replica each) for batches_in_order: `gather` exchanges the
  workers' rows through a barrier between two threads, in worker order, as the collective does."""

  class extended:  # noqa: N801 (the strategy attribute's name)
    worker_devices = ('/cpu:0',)

  num_replicas_in_sync = 2

  def __init__(self, index, exchange, barrier):
    self.index, self.exchange, self.barrier = index, exchange, barrier

  def experimental_distribute_values_from_function(self, fn):
    ctx = type('Ctx', (), {'replica_id_in_sync_group': self.index, 'num_replicas_in_sync': 2})
    return (fn(ctx),)

  def experimental_local_results(self, values):
    return values

  def gather(self, parts, axis):
    self.exchange[self.index] = np.asarray(parts[0])
    self.barrier.wait()
    both = np.concatenate([self.exchange[0], self.exchange[1]], axis=axis)
    self.barrier.wait()  # Both have read before the next round writes.
    return tf.constant(both)


def test_two_workers_draw_alternate_batches_and_both_see_all_in_order():
  import threading
  sizes = [3, 3, 2]  # Round 0: batches 0 | 1; round 1: batch 2 | batch 2 again (dropped).
  # A timeout, not a hang, if the workers' rounds ever disagree.
  exchange, barrier = {}, threading.Barrier(2, timeout=30)
  drawn, seen, layouts = {0: [], 1: []}, {}, {}

  def worker(index):
    def draw(k):
      drawn[index].append(k)
      return {'rows': np.full([sizes[k], 2], k, np.float32)}
    strategy = _FakeWorker(index, exchange, barrier)
    layouts[index] = distributed.worker_layout(strategy)
    seen[index] = [(k, b['rows']) for k, b in
                   distributed.batches_in_order(strategy, sizes, draw, cross_worker=True)]

  threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  assert layouts == {0: (0, 2), 1: (1, 2)}
  assert drawn == {0: [0, 2], 1: [1, 2]}
  for index in range(2):
    assert [k for k, _ in seen[index]] == [0, 1, 2]
    for k, rows in seen[index]:
      assert rows.shape == (sizes[k], 2) and np.all(rows == k)


# Two worker processes on 127.0.0.1 run --mode=sample on the module's checkpoint with
# --strategy=multi_worker: batches 0 and 2 on the chief, 1 on the other (which then draws
# batch 2 again, dropped); the chief writes the samples.
WORKER = """
import json, os, sys
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from ncsn_tf import config as config_lib
from ncsn_tf.cli import modes
config = config_lib.Config.from_dict(json.loads(sys.argv[1]))
config = config_lib.validate(config.replace(mode='sample', train={'strategy': 'multi_worker',
                                                                  'num_cpu_replicas': 0}))
from ncsn_tf.sampling import configured
drawn = []
sample = configured.ConfiguredSampler.sample
def recording(self, num, seed, *args, **kwargs):
  drawn.append(int(seed[1]))  # The batch index k of draw_samples' seed [seed, k].
  return sample(self, num, seed, *args, **kwargs)
configured.ConfiguredSampler.sample = recording
modes.run_sample(config)
print('drawn', json.dumps(drawn))
"""


@pytest.mark.slow  # A minute on 2 cores; the round logic is test_two_workers_draw_alternate_...
def test_two_workers_split_the_batches_and_the_chief_writes_one_devices_samples(run, tmp_path):
  from test_multi_worker import _free_ports
  config, _, state = run
  out_dir = os.path.join(config.workdir, 'samples')
  reference = draw.draw_samples(config, state.score_model, state.sigmas, num=11, seed=config.seed,
                                 show_progress=False)
  if os.path.exists(out_dir):
    os.rename(out_dir, str(tmp_path / 'before'))
  cluster = {'worker': [f'127.0.0.1:{p}' for p in _free_ports(2)]}
  procs = []
  try:
    for index in range(2):
      task = {'type': 'worker', 'index': index}
      env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'PYTHONPATH': REPO_ROOT,
             'TF_CONFIG': json.dumps({'cluster': cluster, 'task': task})}
      procs.append(subprocess.Popen(
          [sys.executable, '-c', WORKER, json.dumps(config.to_dict())], cwd=REPO_ROOT, env=env,
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    drawn = []
    for proc in procs:
      out, err = proc.communicate(timeout=240)
      assert proc.returncode == 0, err[-4000:]
      drawn.append(json.loads(out.split('drawn ')[-1]))
  finally:
    for proc in procs:  # A lone worker would wait for its peer forever.
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  assert drawn == [[0, 2], [1, 2]]  # Batches 4, 4, 3: each worker drew its share.
  with np.load(os.path.join(out_dir, 'samples.npz')) as written:
    np.testing.assert_allclose(written['samples'], reference[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(written['trajectory'], reference[1], atol=ATOL, rtol=0)
