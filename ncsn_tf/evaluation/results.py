"""Where a run's results go: one directory per result, named for what made it.

    <workdir>/<kind>/<name>/      one result: its files and settings.json
    <workdir>/<kind>/latest       a relative symlink to the result written last

kind is the mode's directory (samples, samples_guided, inpainting,
colorization, likelihood); name lists what made the result, e.g.

    samples/heun,num_steps=35,sampling_eps=1e-05,denoise=True,seed=0,step=4400
    samples_guided/guidance=free,w=2.0,class=7,heun,...,seed=0,step=4400
    inpainting/mask=right,pc,predictor=reverse_diffusion,...,seed=0,step=4400
    likelihood/data=test,hutchinson=1,probe=rademacher,rtol=1e-05,...,seed=0,step=4400

so results of different samplers, settings, guidance, seeds or checkpoints
sit side by side, and rerunning a command with the same settings replaces
only its own result. A result is written whole or not at all: `writing`
fills a staging directory beside the others and renames it into place when
the block succeeds (a failure or a kill leaves the previous result as it
was; stale staging directories of dead processes are removed by the next
write).
"""

import contextlib
import datetime
import hashlib
import os
import re
import shutil

from ncsn_tf import config as config_lib
from ncsn_tf.runtime import artifacts
from ncsn_tf.sampling import samplers

#: The stable name of the newest result of a kind.
LATEST = 'latest'
#: Prefixes of the staging and replaced directories (hidden: `ls` shows results only).
_STAGING, _REPLACED = '.tmp-', '.old-'
#: Longest result name: file systems allow 255 bytes; a longer name keeps its start
#: and ends with a hash of the whole.
MAX_NAME = 200
_UNSAFE = re.compile(r'[^A-Za-z0-9._=,+-]')


def _value(value) -> str:
  """A setting's value as it appears in a name: floats in full (repr), others as str."""
  return repr(float(value)) if isinstance(value, float) else str(value)


def part(key: str, value) -> str:
  """'key=value' for a result name."""
  return f'{key}={_value(value)}'


def sampler_part(sampling: config_lib.SamplingConfig) -> str:
  """'heun,num_steps=35,sampling_eps=1e-05,denoise=True': --sampler and its settings."""
  settings = samplers.settings_from(sampling)
  return ','.join([sampling.sampler] + [part(k, v) for k, v in settings.items()])


def name_of(*parts: str, seed: int, step: int) -> str:
  """The directory name of a result: its parts, then seed and checkpoint step; characters
  other than letters, digits and ._=,+- become '_'."""
  name = _UNSAFE.sub('_', ','.join([*parts, part('seed', seed), part('step', step)]))
  if len(name) > MAX_NAME:
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    name = f'{name[:MAX_NAME - len(digest) - 1]}~{digest}'
  return name


def _remove_stale(kind_dir: str):
  """Cleans up after processes that died (e.g. kill -9) while writing a result: their
  staging directories go; a result they had moved aside to replace it comes back if
  its replacement never arrived."""
  for entry in os.listdir(kind_dir):
    rest, _, pid = entry.rpartition('-')
    if not (entry.startswith((_STAGING, _REPLACED)) and pid.isdigit()) or artifacts.pid_alive(int(pid)):
      continue
    path = os.path.join(kind_dir, entry)
    original = os.path.join(kind_dir, rest[len(_REPLACED):])
    if entry.startswith(_REPLACED) and not os.path.exists(original):
      os.rename(path, original)
    elif os.path.islink(path):  # A `latest` link being made.
      os.remove(path)
    else:
      shutil.rmtree(path, ignore_errors=True)


def _point_latest(kind_dir: str, name: str):
  """<kind_dir>/latest -> name, replaced atomically (a reader sees the old or the new link)."""
  link = os.path.join(kind_dir, LATEST)
  tmp = os.path.join(kind_dir, f'{_STAGING}{LATEST}-{os.getpid()}')
  if os.path.lexists(tmp):
    os.remove(tmp)
  os.symlink(name, tmp)
  os.replace(tmp, link)


@contextlib.contextmanager
def writing(workdir: str, kind: str, name: str, settings: dict):
  """Yields an empty directory to write one result into; on success it becomes
  <workdir>/<kind>/<name> (replacing a previous result of that name) and `latest`
  points to it. settings: what made the result, written as settings.json beside it.
  On an exception nothing changes (the staging directory is removed)."""
  kind_dir = os.path.join(workdir, kind)
  os.makedirs(kind_dir, exist_ok=True)
  _remove_stale(kind_dir)
  final = os.path.join(kind_dir, name)
  staging = os.path.join(kind_dir, f'{_STAGING}{name}-{os.getpid()}')
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  try:
    yield staging
    written = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
    artifacts.write_json(os.path.join(staging, 'settings.json'),
                         {'kind': kind, 'name': name, 'written': written, **settings})
    replaced = None
    if os.path.isdir(final):
      replaced = os.path.join(kind_dir, f'{_REPLACED}{name}-{os.getpid()}')
      os.rename(final, replaced)
    os.rename(staging, final)
    if replaced:
      shutil.rmtree(replaced, ignore_errors=True)
    _point_latest(kind_dir, name)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def sampler_settings(config: config_lib.Config) -> dict:
  """What a sampled result records of its sampler: its name and settings."""
  s = config.sampling
  return {'sampler': s.sampler, 'sampler_settings': samplers.settings_from(s),
          'seed': config.seed}
