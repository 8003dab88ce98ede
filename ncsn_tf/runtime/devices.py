"""Devices and the tf.distribute strategy: one place for every part of the run that needs them.

* `strategy_for(config)`: the run's strategy from --strategy and
  --num_cpu_replicas: MirroredStrategy over all visible GPUs (or N logical CPU
  devices), MultiWorkerMirroredStrategy over TF_CONFIG's cluster, else the
  default strategy. Training, sampling and evaluation all ask for it, and get
  the same object in one process (strategies are cached).
* `local_replicas`, `is_chief`: what a process feeds and whether it writes.
* `log_devices`: the one "devices: ...; strategy: ...; precision: ..." line.
"""

import tensorflow as tf
from absl import logging


def configure_cpu_replicas(num_replicas: int):
  """Splits the first physical CPU into `num_replicas` logical devices.

  Must run before TensorFlow initialises its devices; a second call with the
  same count is a no-op, and an already-split CPU with enough devices is reused.
  """
  cpu = tf.config.list_physical_devices('CPU')[0]
  current = tf.config.get_logical_device_configuration(cpu)
  if current and len(current) >= num_replicas:
    return
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_replicas)
  except RuntimeError as e:
    raise RuntimeError(f'--num_cpu_replicas={num_replicas} must be set before TensorFlow '
                       f'initialises its devices ({e})') from None


def make_strategy(num_cpu_replicas: int = 0, kind: str = 'auto') -> tf.distribute.Strategy:
  """The tf.distribute strategy of --strategy.

  auto: MirroredStrategy on all GPUs, or on N logical CPUs, else the default
  strategy; mirrored: MirroredStrategy on this machine's GPUs/CPU replicas even
  if only one; multi_worker: MultiWorkerMirroredStrategy over the cluster in
  TF_CONFIG (it must be created before any other TensorFlow op).
  """
  if kind == 'multi_worker':
    return _cached_strategy(('multi_worker',), tf.distribute.MultiWorkerMirroredStrategy)
  if num_cpu_replicas > 1:
    configure_cpu_replicas(num_cpu_replicas)
    cpus = tuple(d.name for d in tf.config.list_logical_devices('CPU')[:num_cpu_replicas])
    return _cached_strategy(cpus, lambda: tf.distribute.MirroredStrategy(list(cpus)))
  if tf.config.list_physical_devices('GPU') or kind == 'mirrored':
    return _cached_strategy(('mirrored',), tf.distribute.MirroredStrategy)
  return tf.distribute.get_strategy()


_STRATEGIES = {}


def _cached_strategy(key, create):
  """One strategy per device set and process.

  Two MirroredStrategy instances in one process number their collective
  all-reduces from the same start, and TensorFlow's collective executor then
  mixes up the second run's reductions with the first's ("Shape mismatch in the
  collective instance"): a second `train` in a notebook or test would fail.
  """
  if key not in _STRATEGIES:
    _STRATEGIES[key] = create()
  return _STRATEGIES[key]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True unless this process is a non-chief worker of a multi-worker cluster."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == 'chief':
    return True
  return (resolver.task_type == 'worker' and resolver.task_id == 0
          and 'chief' not in resolver.cluster_spec().as_dict())


def local_replicas(strategy) -> int:
  """Replicas of `strategy` on this machine: what this process's one input pipeline
  feeds per step, and what one score evaluation is split over (1 for None or the
  default strategy)."""
  if strategy is None:
    return 1
  try:
    return len(strategy.extended.worker_devices)
  except (RuntimeError, AttributeError, NotImplementedError):  # The default strategy.
    return 1


def strategy_for(config) -> tf.distribute.Strategy:
  """The run's strategy (--strategy, --num_cpu_replicas), for training and sampling alike.

  The same object in every call of this process (strategies are cached), so a
  state built by training or restored for inference in it has its weights
  mirrored on exactly the devices sampling splits the score over.
  """
  return make_strategy(config.train.num_cpu_replicas, config.train.strategy)


def device_summary(strategy: tf.distribute.Strategy, policy: str, requested: str = '') -> str:
  """'devices: 1 CPU, no GPU; strategy: default; precision: float32 (auto)'."""
  cpus = len(tf.config.list_physical_devices('CPU'))
  logical = len(tf.config.list_logical_devices('CPU'))
  devices = f'{cpus} CPU' + (f' ({logical} logical)' if logical > cpus else '')
  gpus = tf.config.list_physical_devices('GPU')
  if gpus:
    names = [tf.config.experimental.get_device_details(g).get('device_name', 'GPU') for g in gpus]
    kinds = ', '.join(dict.fromkeys(names))
    devices += f', {len(gpus)} GPU{"s" if len(gpus) > 1 else ""} ({kinds})'
  else:
    devices += ', no GPU'
  kind = type(strategy).__name__
  if kind == '_DefaultDistributionStrategy':
    used = 'default'
  else:
    replicas = strategy.num_replicas_in_sync
    used = f'{kind}, {replicas} replica{"s" if replicas > 1 else ""}'
    if not is_chief(strategy):
      used += ' (non-chief worker: no outputs)'
  auto = ' (auto)' if requested == 'auto' else ''
  return f'devices: {devices}; strategy: {used}; precision: {policy}{auto}'


_LOGGED_DEVICES = set()


def log_devices(strategy: tf.distribute.Strategy, policy: str, requested: str = ''):
  """Logs `device_summary` once per process (again only if it changes)."""
  line = device_summary(strategy, policy, requested)
  if line not in _LOGGED_DEVICES:
    _LOGGED_DEVICES.add(line)
    logging.info('%s', line)
