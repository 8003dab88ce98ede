"""The trainer end to end on the toy: strategy, resume, summaries, NaN handling."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from ncsn_tf import config as config_lib
from ncsn_tf import losses
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime import devices
from ncsn_tf.training import heldout
from ncsn_tf.training import loop as train_loop
from ncsn_tf.training import step as train_step


def tiny_config(workdir, **train):
  return config_lib.validate(config_lib.Config(
      name='tiny', workdir=str(workdir),
      model=config_lib.ModelConfig(sigma_begin=10.0, sigma_end=1.0, num_scales=4, ngf=32,
                                   num_layers=2),
      train=config_lib.TrainConfig(**{'batch_size': 32, 'train_steps': 40, 'snapshot_freq': 20,
                                      'log_freq': 10, **train}),
      export=config_lib.ExportConfig(str(workdir) + '_export')))


def _weights(model):
  return [w.numpy() for w in model.weights]


def test_mirrored_strategy_on_two_logical_cpus_keeps_replicas_in_sync(tmp_path):
  config = tiny_config(tmp_path, num_cpu_replicas=2, ema_rate=0.9)
  state = train_loop.train(config)
  assert int(state.step.numpy()) == 40
  for var in state.model.weights + state.ema_model.weights:
    copies = [v.numpy() for v in var.value.values]
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], copies[1])
  # The EMA moved away from the initial weights but differs from the model.
  assert not all(np.array_equal(a, b) for a, b in zip(_weights(state.model), _weights(state.ema_model)))


def test_rerun_resumes_at_the_saved_step_and_matches_an_uninterrupted_run(tmp_path):
  straight = train_loop.train(tiny_config(tmp_path / 'straight'))
  first = train_loop.train(tiny_config(tmp_path / 'split', train_steps=20))
  assert int(first.step.numpy()) == 20
  resumed = train_loop.train(tiny_config(tmp_path / 'split'))
  assert int(resumed.step.numpy()) == 40
  ckpts = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / 'split/checkpoints/*.index')))
  assert ckpts == ['ckpt-20.index', 'ckpt-40.index']
  # Same data (a function of the step), same noise (stateless seeds from the
  # step), restored optimizer: the resumed run equals the uninterrupted one up
  # to float reassociation on this CPU.
  for a, b in zip(_weights(straight.model), _weights(resumed.model)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_tensorboard_events_hold_loss_per_sigma_lr_and_speed(tmp_path):
  train_loop.train(tiny_config(tmp_path))
  acc = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'),
                                           size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  tags = acc.Tags()['tensors']
  assert {'loss', 'learning_rate', 'steps_per_sec'} <= set(tags)
  per_sigma = [t for t in tags if t.startswith('loss_per_sigma/')]
  assert len(per_sigma) == 4
  steps = [e.step for e in acc.Tensors('loss')]
  assert steps == [10, 20, 30, 40]
  losses_logged = [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors('loss')]
  assert all(np.isfinite(losses_logged))
  assert float(tf.make_ndarray(acc.Tensors('learning_rate')[0].tensor_proto)) == pytest.approx(1e-3)


def test_heldout_levels_without_examples_are_nan_not_zero(tmp_path):
  """32 held-out examples over 100 levels: most levels get none and have no mean."""
  config = tiny_config(tmp_path, heldout_batches=1).replace(model={'num_scales': 100})
  state = checkpoints.create_state(config, devices.make_strategy())
  mean, per_sigma = heldout.make_heldout_eval(config, state)()
  assert per_sigma.shape == (100,) and np.isfinite(mean) and mean > 0
  seen = np.isfinite(per_sigma)
  assert 0 < seen.sum() <= 32 and np.all(per_sigma[seen] > 0)
  # The overall mean weighs examples, so it lies within the per-level means.
  assert per_sigma[seen].min() <= mean <= per_sigma[seen].max()


def test_config_json_is_written(tmp_path):
  config = tiny_config(tmp_path, train_steps=0)
  train_loop.train(config)
  with open(tmp_path / 'config.json') as f:
    assert config_lib.Config.from_dict(__import__('json').load(f)) == config


def test_nonfinite_loss_stops_loudly_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  base = losses.anneal_dsm_per_example

  def poisoned(score_fn, x, sigmas, seed):
    loss, index = base(score_fn, x, sigmas, seed)
    # NaN on every example drawn at the smallest σ once step 25 is reached
    # (the seed's second entry is the step for a single replica).
    bad = tf.logical_and(seed[1] >= 25, tf.equal(index, len(sigmas) - 1))
    return tf.where(bad, np.nan, loss), index

  monkeypatch.setitem(losses.LOSSES, 'anneal_dsm', poisoned)
  with pytest.raises(train_loop.NonFiniteLossError, match=r'step 25 in σ level 3 \(σ=1\)'):
    train_loop.train(tiny_config(tmp_path))
  assert tf.train.latest_checkpoint(str(tmp_path / 'checkpoints')).endswith('ckpt-20')


def test_heldout_loss_draws_levels_uniformly_whatever_the_training_distribution(tmp_path):
  """--level_sampling changes training only: the held-out numbers stay comparable."""
  uniform = tiny_config(tmp_path, heldout_batches=2)
  lognormal = uniform.replace(train={'level_sampling': 'lognormal', 'level_log_mean': 2.0,
                                     'level_log_std': 0.1})
  state = checkpoints.create_state(uniform, devices.make_strategy())
  mean_u, per_u = heldout.make_heldout_eval(uniform, state)()
  mean_l, per_l = heldout.make_heldout_eval(lognormal, state)()
  assert mean_u == mean_l
  np.testing.assert_array_equal(per_u, per_l)
  # Training with that distribution puts (nearly) every example on the level
  # closest to σ = e² ≈ 7.4 (the ladder is 10, 4.6, 2.2, 1): level 0.
  x = tf.random.stateless_normal([256, 2], [0, 0])
  _, index = train_step.loss_for(lognormal)(lambda xx, ii: tf.zeros_like(xx), x,
                                          tf.constant(state.sigmas), tf.constant([1, 2]))
  assert np.mean(index.numpy() == 0) > 0.99


def test_train_minutes_stops_at_a_chunk_boundary_and_counts_over_resumes(tmp_path):
  # A budget of 60 µs is spent by the first chunk (its tracing alone takes
  # longer), so the run stops after 10 steps, whatever this machine's speed.
  snapshots = []
  config = tiny_config(tmp_path, train_minutes=1e-6)
  state = train_loop.train(config, on_snapshot=lambda s, w: snapshots.append(int(s.step.numpy())))
  assert int(state.step.numpy()) == 10 and snapshots == [10]  # The final snapshot, as at train_steps.
  assert checkpoints.checkpoint_steps(config).keys() == {10}
  seconds = float(state.train_seconds.numpy())
  assert seconds > 6e-5
  # Rerun: the checkpointed seconds say the budget is spent; nothing trains.
  again = train_loop.train(config)
  assert int(again.step.numpy()) == 10 and float(again.train_seconds.numpy()) == seconds
  assert checkpoints.checkpoint_steps(config).keys() == {10}
  # Lifting the budget (a resume-safe field) trains on to train_steps.
  rest = train_loop.train(tiny_config(tmp_path, train_minutes=0))
  assert int(rest.step.numpy()) == 40 and float(rest.train_seconds.numpy()) > seconds
  acc = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'),
                                           size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  assert [e.step for e in acc.Tensors('loss')] == [10, 20, 30, 40]


def test_a_checkpoint_without_train_seconds_resumes_and_gains_them(tmp_path):
  # Checkpoints written before --train_minutes existed hold no train_seconds.
  old = train_loop.train(tiny_config(tmp_path / 'new', train_steps=20))
  workdir = tmp_path / 'old'
  manager = tf.train.CheckpointManager(old.checkpoint(include_train_seconds=False),
                                       str(workdir / 'checkpoints'), max_to_keep=2)
  manager.save(checkpoint_number=20)
  assert not checkpoints._has_train_seconds(manager.latest_checkpoint)  # pylint: disable=protected-access
  resumed = train_loop.train(tiny_config(workdir, train_minutes=60))
  assert int(resumed.step.numpy()) == 40
  for a, b in zip(_weights(resumed.model), _weights(train_loop.train(tiny_config(tmp_path / 'new')).model)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  latest = tf.train.latest_checkpoint(str(workdir / 'checkpoints'))
  assert latest.endswith('ckpt-40') and checkpoints._has_train_seconds(latest)  # pylint: disable=protected-access
