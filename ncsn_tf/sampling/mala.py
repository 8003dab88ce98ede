"""Metropolis-adjusted Langevin algorithm (MALA; Roberts & Tweedie 1996).

The proposal is one Langevin step in the convention of `langevin.py`,

    x' = x + ε ∇log p(x) + sqrt(2ε) z,   z ~ N(0, I),

so q(x'|x) = N(x'; x + ε∇log p(x), 2εI), and x' is accepted with probability

    min(1, p(x') q(x|x') / (p(x) q(x'|x))).

The accept/reject step makes p exactly invariant for every ε (plain Langevin
is biased by O(ε)); it needs the log-density, not only the score, which is why
NCSN (a score model) cannot use it and the lab runs it with the exact toy
density. The loop runs in the graph (`tf.while_loop` under `tf.function`) with
stateless noise: a run is a pure function of (x_init, seed).
"""

import tensorflow as tf

from ncsn_tf.sampling.langevin import langevin_update


def _log_proposal(x_to, x_from, score_from, step_size):
  """log q(x_to | x_from) up to the constant shared by both directions: [N]."""
  mean = x_from + step_size * score_from
  return -tf.reduce_sum(tf.square(x_to - mean), axis=-1) / (4.0 * step_size)


def _log_prob_and_score(log_prob_fn, x):
  with tf.GradientTape() as tape:
    tape.watch(x)
    log_prob = log_prob_fn(x)
  return log_prob, tape.gradient(log_prob, x)


@tf.function(reduce_retracing=True)
def mala(log_prob_fn, x_init, *, step_size, n_steps, seed, num_snapshots=0):
  """MALA chains from `x_init`.

  Args:
    log_prob_fn: x [N, D] -> log p(x) [N] (normalisation not needed); its
      gradient (autodiff) is the score used by the proposal.
    x_init: float32 [N, D] starting points, one chain each.
    step_size: ε > 0 (the proposal variance is 2ε).
    n_steps: number of proposals per chain (python int).
    seed: int32 [2] stateless seed.
    num_snapshots: if > 0, also return this many states evenly spaced over the
      run (the last is the final state).

  Returns:
    dict with 'samples' float32 [N, D], 'acceptance_rate' (scalar: the share of
    accepted proposals over all chains and steps), 'acceptance_per_chain' [N],
    and with num_snapshots > 0 'trajectory' [num_snapshots, N, D].
  """
  x = tf.convert_to_tensor(x_init, tf.float32)
  seed = tf.cast(seed, tf.int32)
  step_size = tf.cast(step_size, tf.float32)
  log_prob, score = _log_prob_and_score(log_prob_fn, x)
  snapshot_every = max(n_steps // max(num_snapshots, 1), 1)
  trajectory = tf.TensorArray(tf.float32, size=max(num_snapshots, 1), element_shape=x.shape)

  def body(t, x, log_prob, score, accepted, trajectory):
    noise_seed, uniform_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(seed, t), 2))
    proposal = langevin_update(x, score, step_size,
                               tf.random.stateless_normal(tf.shape(x), noise_seed))
    proposal_log_prob, proposal_score = _log_prob_and_score(log_prob_fn, proposal)
    log_ratio = (proposal_log_prob + _log_proposal(x, proposal, proposal_score, step_size)
                 - log_prob - _log_proposal(proposal, x, score, step_size))
    log_u = tf.math.log(tf.random.stateless_uniform(tf.shape(log_prob), uniform_seed))
    # A non-finite proposal (log p = −inf or NaN) is always rejected.
    accept = tf.logical_and(log_u < log_ratio, tf.math.is_finite(log_ratio))
    x = tf.where(accept[:, None], proposal, x)
    log_prob = tf.where(accept, proposal_log_prob, log_prob)
    score = tf.where(accept[:, None], proposal_score, score)
    accepted += tf.cast(accept, tf.float32)
    if num_snapshots:
      slot = (t + 1) // snapshot_every - 1
      take = tf.logical_and((t + 1) % snapshot_every == 0, slot < num_snapshots)
      trajectory = tf.cond(take, lambda: trajectory.write(slot, x), lambda: trajectory)
    return t + 1, x, log_prob, score, accepted, trajectory

  _, x, _, _, accepted, trajectory = tf.while_loop(
      lambda t, *_: t < n_steps, body,
      (tf.constant(0), x, log_prob, score, tf.zeros(tf.shape(x)[:1]), trajectory))
  per_chain = accepted / float(max(n_steps, 1))
  out = {'samples': x, 'acceptance_rate': tf.reduce_mean(per_chain),
         'acceptance_per_chain': per_chain}
  if num_snapshots:
    out['trajectory'] = tf.tensor_scatter_nd_update(trajectory.stack(), [[num_snapshots - 1]],
                                                    x[None])
  return out
