"""--lr_schedule and --warmup_steps: the closed form, Adam's updates, resume, TensorBoard."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from test_train_lib import tiny_config

from ncsn_tf.runtime import lr_schedule
from ncsn_tf.training import loop as train_loop


def expected_rate(t, peak, warmup, total, decay):
  """The schedule written out by hand from the module docstring (t = 0 is the first update)."""
  if t < warmup:
    return peak * (t + 1) / warmup
  if decay == 'constant':
    return peak
  return 0.5 * peak * (1 + math.cos(math.pi * min((t - warmup) / (total - warmup), 1.0)))


@pytest.mark.parametrize('decay,warmup', [('constant', 10), ('cosine', 0), ('cosine', 25)])
def test_schedule_matches_the_closed_form(decay, warmup):
  schedule = lr_schedule.WarmupSchedule(2e-3, warmup, 200, decay)
  for t in [0, 1, 9, 10, 24, 25, 26, 100, 199, 200, 250]:
    # float32 arithmetic: relative error ~1e-7, except near the end where
    # 1 + cos(...) cancels and the error is ~1e-7 of the peak in absolute terms.
    assert float(schedule(t)) == pytest.approx(expected_rate(t, 2e-3, warmup, 200, decay),
                                               rel=1e-5, abs=1e-6 * 2e-3)


def test_constant_without_warmup_is_the_plain_float_and_config_round_trips():
  assert lr_schedule.learning_rate(1e-3) == 1e-3
  schedule = lr_schedule.learning_rate(1e-3, 'cosine', 5, 50)
  clone = lr_schedule.WarmupSchedule.from_config(schedule.get_config())
  assert [float(clone(t)) for t in range(0, 60, 7)] == [float(schedule(t)) for t in range(0, 60, 7)]
  with pytest.raises(ValueError, match='decay must be one of'):
    lr_schedule.WarmupSchedule(1e-3, decay='step')


def test_adam_moves_each_update_by_the_scheduled_rate():
  """With a constant gradient Adam's bias-corrected m̂/√v̂ is exactly 1, so update t
  moves the weight by lr(t) (less ε's share, ~1e-7 of it): the weight after n
  updates is 1 - Σ lr(t), an independent check that the schedule reaches Adam."""
  schedule = lr_schedule.WarmupSchedule(1e-2, 4, 20, 'cosine')
  weight = keras.Variable(np.ones(1, np.float32))
  optimizer = keras.optimizers.Adam(learning_rate=schedule)
  moved = []
  for _ in range(24):
    before = float(weight.numpy()[0])
    optimizer.apply_gradients([(tf.ones(1), weight)])
    moved.append(before - float(weight.numpy()[0]))
  want = [expected_rate(t, 1e-2, 4, 20, 'cosine') for t in range(24)]
  # float32 weights near 1: each difference carries ~1e-7 absolute round-off.
  np.testing.assert_allclose(moved, want, atol=2e-6)


class _Crash(Exception):
  pass


def _crash_at_step_20(state, writer):
  del writer
  if int(state.step.numpy()) == 20:
    raise _Crash()


def test_cosine_run_resumes_mid_decay_and_logs_the_decaying_rate(tmp_path):
  cosine = dict(lr_schedule='cosine', warmup_steps=5)
  straight = train_loop.train(tiny_config(tmp_path / 'straight', **cosine))
  # The same command dies after its step-20 checkpoint and is run again: the
  # restored update counter picks the cosine up at step 20 of the same horizon.
  with pytest.raises(_Crash):
    train_loop.train(tiny_config(tmp_path / 'split', **cosine), on_snapshot=_crash_at_step_20)
  resumed = train_loop.train(tiny_config(tmp_path / 'split', **cosine))
  assert int(resumed.step.numpy()) == 40
  for a, b in zip(straight.model.weights, resumed.model.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)

  acc = event_accumulator.EventAccumulator(str(tmp_path / 'straight' / 'tensorboard'),
                                           size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  logged = {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors('learning_rate')}
  # Logged at step s: the rate of the next update, lr(s); 0 once the run is over.
  assert sorted(logged) == [10, 20, 30, 40]
  for step, rate in logged.items():
    assert rate == pytest.approx(expected_rate(step, 1e-3, 5, 40, 'cosine'), rel=1e-5, abs=1e-9)
