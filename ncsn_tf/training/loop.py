"""The one training loop, for every dataset and model.

`train(config)` resumes from <workdir>/checkpoints when it can, runs chunks of
compiled steps (training/step.py) on the run's strategy, writes TensorBoard
scalars and checkpoints (the chief only), evaluates the held-out loss at each
snapshot, stops cleanly on SIGTERM/SIGINT after saving, stops loudly on a
non-finite loss, and honours --train_minutes across resumes.
"""

import contextlib
import os
import shutil
import signal
import threading
import time

import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime import devices
from ncsn_tf.runtime.progress import Progress
from ncsn_tf.training import heldout
from ncsn_tf.training import step as train_step


class NonFiniteLossError(RuntimeError):
  """The loss or a gradient became NaN/Inf; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
  """SIGTERM/SIGINT stopped training after a checkpoint at the current step."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


def _write_scalars(writer, step, stats, sigmas, lr, steps_per_sec, skip_nonfinite=False):
  count = stats['per_sigma_count']
  with writer.as_default(step=step):
    tf.summary.scalar('loss', stats['loss_sum'] / max(count.sum(), 1.0))
    for i, (s, c) in enumerate(zip(stats['per_sigma_sum'], count)):
      if c > 0:
        tf.summary.scalar(f'loss_per_sigma/level_{i:02d}_sigma_{sigmas[i]:.3g}', s / c)
    tf.summary.scalar('learning_rate', lr)
    tf.summary.scalar('steps_per_sec', steps_per_sec)
    if skip_nonfinite:
      tf.summary.scalar('nonfinite_skipped_steps', stats['skipped'])
  writer.flush()


def _accumulate(total, stats):
  """Sums two chunks' stats (loss sums, counts, skipped steps)."""
  if total is None:
    return dict(stats)
  return {k: (total[k] + stats[k] if k in ('loss_sum', 'per_sigma_sum', 'per_sigma_count', 'skipped')
              else stats[k]) for k in stats}


class _StopRequest:
  """A SIGTERM/SIGINT handler that asks the loop to save and stop at the next chunk."""

  def __init__(self):
    self.signum = None

  def __call__(self, signum, frame):
    del frame
    if self.signum is not None:  # A second signal: stop waiting for the save.
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.signum = signum
    logging.warning('received %s: saving a checkpoint when the current chunk of steps ends, '
                    'then stopping (send it again to stop at once, unsaved)',
                    signal.Signals(signum).name)


@contextlib.contextmanager
def _stop_on_signals():
  request = _StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request  # Signal handlers can only be set from the main thread.
    return
  previous = {sig: signal.signal(sig, request) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield request
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)


def _make_any_worker(strategy):
  """flag -> whether any worker's flag is set (a collective: every worker calls it)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return lambda flag: flag

  @tf.function
  def any_worker(flag):
    per_replica = strategy.run(lambda f: tf.identity(f), args=(flag,))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) > 0

  return lambda flag: bool(any_worker(tf.constant(float(flag))).numpy())


def _worker_checkpoint_dir(config: config_lib.Config, strategy) -> str:
  """A non-chief worker's scratch checkpoint dir (saved into, then deleted)."""
  resolver = strategy.cluster_resolver
  return os.path.join(config.workdir, f'.tmp-{resolver.task_type}-{resolver.task_id}-checkpoints')


def _train_dataset(config: config_lib.Config, strategy, step: int):
  """The distributed training stream, positioned at `step`.

  Each input pipeline feeds its local replicas one batch each per step. Toy
  streams and the in-memory `shapes` images resume exactly where they
  stopped (a pure function of the step); tfds and folder streams restart
  with a fresh shuffle seeded by the step (replaying them would decode every
  skipped image).
  """
  consumed = step * devices.local_replicas(strategy)
  return strategy.distribute_datasets_from_function(  # (images, labels) when needs_labels
      data_lib.dataset_fn(config, start_batch=consumed, with_labels=train_step.needs_labels(config)))


def train(config: config_lib.Config, *, on_snapshot=None) -> checkpoints.TrainState:
  """Trains (or resumes) until `config.train.train_steps`; returns the state.

  With `config.train.train_minutes` > 0 training also ends at the first chunk
  boundary after the loop has run that long over all runs on the workdir (the
  seconds are checkpointed), with the final log, checkpoint and snapshot of a
  finished run. A cosine --lr_schedule still decays towards train_steps.

  on_snapshot: optional callable (state, writer) run after each checkpoint,
    e.g. to log image samples (chief only).
  Raises NonFiniteLossError (unless --skip_nonfinite), TrainingInterrupted
  after SIGTERM/SIGINT (a checkpoint at the current step was saved), and
  ConfigMismatchError when the workdir holds a different configuration.
  """
  if config.train.deterministic:
    # Before any op: bitwise-reproducible kernels and tf.data order.
    tf.config.experimental.enable_op_determinism()
  checkpoints.check_resume_config(config)
  strategy = devices.strategy_for(config)
  chief = devices.is_chief(strategy)
  state = checkpoints.create_state(config, strategy)
  state.chief = chief
  ckpt = state.checkpoint()
  # Every worker saves (saving may run collectives); only the chief's copy stays.
  save_dir = checkpoints.checkpoint_dir(config) if chief else _worker_checkpoint_dir(config, strategy)
  manager = tf.train.CheckpointManager(ckpt, save_dir, max_to_keep=config.train.max_checkpoints)
  latest = tf.train.latest_checkpoint(checkpoints.checkpoint_dir(config))
  if latest:
    # A checkpoint from before --train_minutes has no train_seconds: restore
    # the rest, and count its training time from zero.
    restoring = state.checkpoint(include_train_seconds=checkpoints._has_train_seconds(latest))
    checkpoints.restore_checked(restoring, latest, config, complete=True)
    logging.info('resumed from %s at step %d', latest, int(state.step.numpy()))
  if chief:  # Once the checkpoint (if any) is known to fit: a refused run changes nothing.
    checkpoints.write_config_json(config)
  # --train_minutes counts the loop's wall clock (steps, snapshots, samples)
  # over all runs on this workdir: the checkpoints carry the seconds so far.
  budget = 60.0 * config.train.train_minutes
  seconds_before, loop_start = float(state.train_seconds.numpy()), time.monotonic()
  seconds_so_far = lambda: seconds_before + time.monotonic() - loop_start

  def save(step):
    state.train_seconds.assign(seconds_so_far())
    path = manager.save(checkpoint_number=step)
    if not chief:
      shutil.rmtree(save_dir, ignore_errors=True)
      return latest_saved[0]
    latest_saved[0] = path
    return path

  latest_saved = [latest]
  iterator = iter(_train_dataset(config, strategy, int(state.step.numpy())))
  writer = (tf.summary.create_file_writer(os.path.join(config.workdir, 'tensorboard')) if chief
            else tf.summary.create_noop_writer())
  train_chunk = train_step.make_train_chunk(config, strategy, state)
  heldout_eval = heldout.make_heldout_eval(config, state) if chief else None
  any_worker = _make_any_worker(strategy)
  t = config.train
  total = t.train_steps
  step = int(state.step.numpy())
  progress = Progress('train', total, initial=step,
                      time_left=budget - seconds_so_far() if budget > 0 else None)
  saved_step = step if latest else None
  logged, logged_time, logged_steps, skipped_total = None, 0.0, 0, 0

  def out_of_time(seconds):
    # Every worker asks (a collective); any worker's clock past the budget stops all.
    return step < total and budget > 0 and any_worker(seconds >= budget)

  spent, start_step = out_of_time(seconds_before), step  # Spent by the earlier runs?
  if spent:
    logging.info('--train_minutes=%g: the training budget was spent at step %d of %d; not '
                 'training further (raise --train_minutes or use a new --workdir to train more)',
                 t.train_minutes, step, total)
  with _stop_on_signals() as stop:
    while step < total and not spent:
      chunk = min(t.log_freq - step % t.log_freq, t.snapshot_freq - step % t.snapshot_freq,
                  total - step, t.max_chunk_steps)
      start = time.time()
      stats = {k: v.numpy() for k, v in train_chunk(iterator, tf.constant(chunk)).items()}
      if stats['bad_step'] >= 0:
        _raise_nonfinite(stats, state.sigmas, latest_saved[0])
      step = int(state.step.numpy())
      logged = _accumulate(logged, stats)
      logged_time += time.time() - start
      logged_steps += chunk
      spent = out_of_time(seconds_so_far())
      last = step == total or spent  # The final chunk: log, save and sample as at train_steps.
      if step % t.log_freq == 0 or last:
        skipped_total += int(logged['skipped'])
        # Adam's current rate, the one the next update uses (--lr_schedule).
        lr = float(state.optimizer.learning_rate.numpy())
        _write_scalars(writer, step, logged, state.sigmas, lr,
                       logged_steps / max(logged_time, 1e-9), t.skip_nonfinite)
        if logged['skipped']:
          logging.warning('skipped %d non-finite step(s) up to step %d (%d in all)',
                          int(logged['skipped']), step, skipped_total)
        progress.update(step, loss=float(logged['loss_sum'] / max(logged['per_sigma_count'].sum(), 1)))
        logged, logged_time, logged_steps = None, 0.0, 0
      if step % t.snapshot_freq == 0 or last:
        save(step)
        saved_step = step
        if heldout_eval is not None:
          heldout._write_heldout(writer, step, heldout_eval(), state.sigmas)
        if on_snapshot is not None and chief:
          on_snapshot(state, writer)
      if any_worker(stop.signum is not None) and step < total:
        if saved_step != step:
          save(step)
        writer.flush()
        progress.close()
        name = signal.Signals(stop.signum).name if stop.signum else 'another worker'
        message = (f'stopped by {name} at step {step}: saved checkpoint {latest_saved[0]}; '
                   f'run the same command again to resume')
        logging.warning(message)
        raise TrainingInterrupted(message, stop.signum or signal.SIGTERM)
  progress.close()
  if spent and step > start_step:
    logging.info('--train_minutes=%g: stopped at step %d of %d after %.1f minutes of training',
                 t.train_minutes, step, total, seconds_so_far() / 60)
  if saved_step != step:
    save(step)
  writer.flush()
  return state


def _raise_nonfinite(stats, sigmas, last_checkpoint):
  level = int(stats['bad_level'])
  where = f'σ level {level} (σ={sigmas[level]:.4g})' if level >= 0 else 'a gradient'
  raise NonFiniteLossError(
      f'non-finite loss at step {int(stats["bad_step"])} in {where}; nothing was saved after it, '
      f'the latest checkpoint is {last_checkpoint or "none"}. Lower --learning_rate or check the data.')
