"""Sampling on several devices: the score's rows over local replicas, batches over workers.

`--mode=sample`, `--mode=eval`, the toy evaluation, the sde_samplers lab and
the snapshots during training draw with the run's tf.distribute strategy
(`runtime.devices.strategy_for`: --strategy and --num_cpu_replicas, as
training builds it). Two levels:

* Within a machine (MirroredStrategy over the GPUs, or over
  --num_cpu_replicas logical CPUs): the chain itself (x, its noise, the
  Langevin corrector's batch-averaged step, the ODE solver's step control)
  runs once, over the whole batch, on the default device; every score
  evaluation, the only expensive part, is split by rows over the local
  replicas with `strategy.run`, and the rows are concatenated back in order
  (`ShardedScoreModel`). Replica r of L gets rows [⌊rN/L⌋, ⌊(r+1)N/L⌋) of an
  N-row call, so an uneven batch gives the first replicas one row fewer (7
  rows on 2 replicas: 3 + 4), and a replica with no rows evaluates one dummy
  row that is dropped (a network never sees an empty batch). Inside
  strategy.run each replica reads its own copy of the mirrored weights.
* Across machines (MultiWorkerMirroredStrategy, `--mode=sample` and
  `--mode=eval` started on every worker): whole batches go round-robin to the
  workers (batch k to worker k mod W), each sampled on that worker's local
  replicas as above, and each round's batches are all-gathered in order
  (`batches_in_order`); the chief writes the outputs. After --mode=train the
  chief samples alone, on its own replicas (no cross-worker calls).

The seed rule, and why samples do not depend on the number of devices: batch
k of a call is always the same rows with the same seeds (modes.draw_samples:
[seed, k] and [seed, 1000 + k]), and every random number of its chain is
drawn once, for the whole batch, exactly as on one device; the replicas only
evaluate s(x, t) on their rows, a row-wise function. So annealed Langevin,
PC (every predictor and corrector), the ODE and Heun give one device's
samples up to float32 round-off (tests/test_distributed_sampling.py): the
batch-averaged step of PC's Langevin corrector and the ODE's error norm are
computed over the whole batch, so they are one device's too, with no
cross-replica reduction inside the samplers' loops. The adaptive ODE agrees
within its tolerance, atol + rtol |x|, with the same NFE: its error estimate
is a difference of two nearly equal solutions, so round-off moves it, and
with it the step sizes, slightly.

Why not run whole chains per replica under strategy.run: the corrector's
batch average would then need ReplicaContext.all_reduce inside the chain's
tf.while_loop, and MirroredStrategy implements that with merge_call, which
raises "merge_call called while defining a new graph or a tf.function" there
(measured, TF 2.21, CPU; its merge-free path is used only for XLA-compiled
functions on GPUs). The ODE's adaptive steps, taken from the error norm over
each replica's part, would differ per replica, and every replica would draw
the whole batch's noise to keep its rows. Splitting only the score avoids all
three; it costs one split and one concatenation of the batch per score
evaluation, measured in docs/sde.md ("Sampling on several devices").

A score model with per-example state (`labels` of class guidance,
sampling/guidance.py) is not split: its labels are the whole batch's, and
`shard` returns it as is (one device).
"""

from __future__ import annotations

import weakref
from typing import Callable
from typing import Iterator
from typing import Sequence

import numpy as np
import tensorflow as tf

from ncsn_tf.runtime import devices

_METHODS = ('score_index', 'score_sigma', 'score_t')


def worker_layout(strategy) -> tuple[int, int]:
  """(this worker's index, number of workers): (0, 1) unless multi-worker.

  Replica ids of MultiWorkerMirroredStrategy run worker by worker (the chief
  first), L per worker, so this worker's first replica id over L is its index.
  """
  local = devices.local_replicas(strategy)
  if strategy is None or strategy.num_replicas_in_sync <= local:
    return 0, 1
  ids = strategy.experimental_local_results(
      strategy.experimental_distribute_values_from_function(
          lambda ctx: ctx.replica_id_in_sync_group))
  return int(ids[0]) // local, strategy.num_replicas_in_sync // local


class ShardedScoreModel:
  """A score model whose every evaluation is split by rows over the local replicas.

  Args:
    score_model: a models.score_model.ScoreModel (or anything with its three
      methods and `sigmas`, `num_scales`, `is_continuous`) whose output row i
      depends only on input row i.
    strategy: a tf.distribute strategy with L >= 2 local replicas; the weights
      should be mirrored by it (built in its scope), or each replica reads
      them from the default device.

  `score_index(x, sigma_index)`, `score_sigma(x, sigma)` and `score_t(x, t,
  sde)` answer as the wrapped model's, with x float32 [N, ...] and the second
  argument [N] (or a scalar, passed whole): replica r evaluates rows
  [⌊rN/L⌋, ⌊(r+1)N/L⌋) on its device, and the results are concatenated in row
  order on the caller's device. Other attributes are the wrapped model's. The
  methods are bound once (models/score_model.py: tf.function keys its traces
  on the callable).
  """

  def __init__(self, score_model, strategy):
    self.score_model = score_model
    self.strategy = strategy
    self.replicas = devices.local_replicas(strategy)
    if self.replicas < 2:
      raise ValueError(f'a ShardedScoreModel needs a strategy with >= 2 local replicas, '
                       f'got {self.replicas}')
    for name in _METHODS:
      setattr(self, name, getattr(self, name))

  def __getattr__(self, name):
    # Only called for attributes not found on the instance: sigmas, num_scales,
    # is_continuous, network, ... of the wrapped model.
    if name == 'score_model':  # Not yet set (copy, unpickling): no recursion.
      raise AttributeError(name)
    return getattr(self.score_model, name)

  def score_index(self, x, sigma_index):
    return self._concat(self.per_replica('score_index', x, sigma_index))

  def score_sigma(self, x, sigma):
    return self._concat(self.per_replica('score_sigma', x, sigma))

  def score_t(self, x, t, sde):
    return self._concat(self.per_replica('score_t', x, t, sde=sde))

  def per_replica(self, method: str, x, level, **kwargs) -> tuple:
    """The wrapped model's `method` on each replica's rows: a tuple of L tensors,
    replica r's [n_r, ...] on its own device (the parts `score_*` concatenate)."""
    x = tf.convert_to_tensor(x)
    level = tf.convert_to_tensor(level)
    n = tf.shape(x)[0]
    split_level = level.shape.rank != 0
    replicas = self.replicas
    fn = getattr(self.score_model, method)

    def rows(ctx):
      # Replica ids of a multi-worker strategy are global; the rows are this
      # worker's, so its local index is the id modulo L (worker_layout).
      r = ctx.replica_id_in_sync_group % replicas
      lo, hi = (r * n) // replicas, ((r + 1) * n) // replicas
      # An empty part evaluates one dummy row (the last row), dropped below.
      start = tf.minimum(lo, tf.maximum(n - 1, 0))
      stop = tf.maximum(hi, start + 1)
      return (x[start:stop], level[start:stop] if split_level else level, lo - start, hi - lo)

    def replica_fn(part):
      x_part, level_part, offset, count = part
      return fn(x_part, level_part, **kwargs)[offset:offset + count]

    parts = self.strategy.experimental_distribute_values_from_function(rows)
    return self.strategy.experimental_local_results(self.strategy.run(replica_fn, args=(parts,)))

  @staticmethod
  def _concat(parts):
    return tf.concat(parts, axis=0)


_SHARDED = weakref.WeakKeyDictionary()


def shard(score_model, strategy):
  """`score_model` split over `strategy`'s local replicas; itself when there is one replica.

  Also itself for a model with per-example labels (guidance: the labels are
  the whole batch's) and for a model already sharded. The same
  ShardedScoreModel object for the same (model, strategy), so the samplers'
  traces are reused from call to call.
  """
  if (strategy is None or devices.local_replicas(strategy) < 2 or isinstance(score_model, ShardedScoreModel)
      or getattr(score_model, 'labels', None) is not None):
    return score_model
  per_model = _SHARDED.setdefault(score_model, {})
  sharded = per_model.get(id(strategy))
  if sharded is None or sharded.strategy is not strategy:
    sharded = per_model[id(strategy)] = ShardedScoreModel(score_model, strategy)
  return sharded


def batches_in_order(strategy, sizes: Sequence[int], draw: Callable[[int], dict], *,
                     cross_worker: bool) -> Iterator[tuple[int, dict]]:
  """Yields (k, draw(k)) for every batch k in order, on every worker.

  Args:
    strategy: the sampling strategy (None: this process alone).
    sizes: rows of each batch (len(sizes) batches; known to every worker).
    draw: k -> {name: numpy array with batch k's rows on axis 0}; the same
      names, dtypes and trailing shapes for every k.
    cross_worker: split the batches over the workers of a multi-worker
      strategy. Every worker must then call this with the same sizes (it is a
      collective); False (or one worker) draws every batch here.

  With W workers, round j draws batch jW + w on worker w; a worker past the
  last batch draws the last batch again (it would idle anyway) and its copy
  is dropped. Each round's arrays are all-gathered (strategy.gather, uneven
  batch sizes allowed), so every worker sees every batch.
  """
  worker, workers = worker_layout(strategy) if cross_worker else (0, 1)
  num = len(sizes)
  if workers == 1:
    for k in range(num):
      yield k, draw(k)
    return
  local = devices.local_replicas(strategy)
  worker_devices = strategy.extended.worker_devices
  for first in range(0, num, workers):
    mine = draw(min(first + worker, num - 1))
    ks = [first + w for w in range(workers)]
    counts = [sizes[min(k, num - 1)] for k in ks]
    gathered = {}
    for name, value in mine.items():

      def on_replica(ctx, value=value):
        # This worker's rows on its first replica, none on its others.
        index = ctx.replica_id_in_sync_group % local
        with tf.device(worker_devices[index]):
          value = tf.convert_to_tensor(value)
          return value if index == 0 else value[:0]

      parts = strategy.experimental_distribute_values_from_function(on_replica)
      gathered[name] = strategy.gather(parts, axis=0).numpy()
    offsets = np.cumsum([0] + counts)
    for w, k in enumerate(ks):
      if k < num:
        yield k, {name: value[offsets[w]:offsets[w + 1]] for name, value in gathered.items()}
