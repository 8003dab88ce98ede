"""The batch loop of sampling: batches, their seeds, progress, and every device.

`draw_samples` draws --num_samples samples with the configured sampler in
batches of --sample_batch_size; batch k uses the 'samples' seed stream at
index k (sampling/configured.py STREAMS), so the samples do not depend on the
devices or on how the batches are spread over them. Its progress line moves
with every step of a sampler that has steps (`STEP_PROGRESS`), so one long
batch shows its progress too.
"""

import numpy as np

from ncsn_tf import config as config_lib
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.runtime.progress import Progress
from ncsn_tf.sampling import callbacks
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import distributed

#: The per-step callback of every draw: one object for the whole process, so a
#: sampler's trace is made once and reused by every draw, with a progress line or
#: without (training's snapshots: no target, the step is not shown); a new
#: callback object per call would trace every chain again.
STEP_PROGRESS = callbacks.StepProgress()


def draw_samples(config: config_lib.Config, score_model, sigmas, *, num: int, seed: int,
                 show_progress: bool = True, return_nfe: bool = False, strategy=None,
                 cross_worker: bool = False, before_batch=None):
  """Samples from the learned score with --sampler, in batches of --sample_batch_size.

  score_model: a ScoreModel, or a ladder network s(x, sigma_index) (wrapped
  with `sigmas`). Batch k starts from seed [seed, k] and runs its chain on
  [seed, 1000 + k].

  strategy: the devices to sample on (sampling/distributed.py; None: one
  device): every score evaluation is split over its local replicas and, with
  cross_worker (every worker of a multi-worker strategy calls this), the
  batches over its workers. The samples are one device's up to float32
  round-off: the seeds above do not depend on the devices.

  before_batch: None, or fn(start, size) called before batch k (rows
  [start, start + size)) is drawn: guidance assigns that batch's labels.

  Returns (samples [num, *shape], trajectory [K, num, *shape]): annealed
  Langevin keeps --num_snapshots states; the SDE samplers keep only the last
  (K = 1). With return_nfe, also the score evaluations per sample (of the
  last batch: the ODE's count varies with the batch).
  """
  shape = data_lib.data_shape(config.data)
  s = config.sampling
  # The same wrapper object for the same network: tf.function keys its trace
  # cache on the callable, so a fresh wrapper would retrace (and re-optimise)
  # the whole sampler graph at every snapshot and batch. `shard` caches too.
  sampler = configured.ConfiguredSampler(config, score_model, shape, strategy=strategy,
                                         sigmas=sigmas)
  sizes = [min(s.sample_batch_size, num - start) for start in range(0, num, s.sample_batch_size)]

  progress = Progress('sample', num) if show_progress else None

  def draw(k):
    start = k * s.sample_batch_size
    if before_batch is not None:
      before_batch(start, sizes[k])
    STEP_PROGRESS.target(progress, start, sizes[k])
    samples, trajectory, nfe = sampler.sample(sizes[k], seed, index=k,
                                              num_snapshots=s.num_snapshots,
                                              callback=STEP_PROGRESS)
    samples = samples.numpy()
    trajectory = samples[None] if trajectory is None else trajectory.numpy()
    # Rows first, as batches_in_order gathers them; the NFE once per row.
    return {'samples': samples, 'trajectory': np.moveaxis(trajectory, 1, 0),
            'nfe': np.full([sizes[k]], int(nfe), np.int32)}

  outputs, trajectories = [], []
  done, nfe = 0, 0
  try:
    for _, batch in distributed.batches_in_order(strategy, sizes, draw,
                                                 cross_worker=cross_worker):
      outputs.append(batch['samples'])
      trajectories.append(np.moveaxis(batch['trajectory'], 0, 1))
      nfe = int(batch['nfe'][0])
      done += len(batch['samples'])
      if progress:
        progress.update(done)
  finally:
    STEP_PROGRESS.target(None)
    if progress:
      progress.close()
  result = np.concatenate(outputs), np.concatenate(trajectories, axis=1)
  return (*result, nfe) if return_nfe else result


def sample_one_batch(sampler: configured.ConfiguredSampler, num: int, seed, *, desc: str,
                     **kwargs):
  """sampler.sample(num, seed, **kwargs) with a progress line `desc` over its rows that
  moves with every step of the chain (a conditioned batch of inpainting or
  colourisation is one long chain)."""
  with Progress(desc, num) as progress:
    STEP_PROGRESS.target(progress, 0, num)
    try:
      result = sampler.sample(num, seed, callback=STEP_PROGRESS, **kwargs)
    finally:
      STEP_PROGRESS.target(None)
    progress.update(num)
  return result
