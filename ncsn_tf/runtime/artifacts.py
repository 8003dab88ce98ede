"""Files a run writes, written atomically: a reader (or a killed run) never sees half a file.

`atomic_path(path)` yields a temporary name beside `path` and renames it into
place when the block succeeds; every writer of the package goes through it
(JSON, npz, text here; PNG and GIF in ncsn_tf/plots.py). <workdir>/metrics.json
is read and written only here.
"""

import contextlib
import json
import math
import os

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str):
  """A temporary path beside `path`, with its extension, renamed onto `path` on success.

  The directory is created if needed. On an exception the temporary file is
  removed and `path` is left as it was.
  """
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  root, ext = os.path.splitext(path)
  tmp = f'{root}.tmp-{os.getpid()}{ext}'
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str):
  """Replaces the file at `path` with `text`, atomically."""
  with atomic_path(path) as tmp, open(tmp, 'w') as f:
    f.write(text)


def write_json(path: str, payload: dict):
  """Replaces the JSON file at `path` with `payload` (sorted keys, indented), atomically."""
  write_text(path, json.dumps(payload, indent=2, sort_keys=True))


def write_npz(path: str, **arrays):
  """Replaces the compressed .npz at `path` with `arrays`, atomically."""
  with atomic_path(path) as tmp:
    np.savez_compressed(tmp, **arrays)


def json_floats(values) -> list:
  """Floats for JSON: NaN and ±inf (e.g. a σ level with no held-out example) become null."""
  return [float(v) if math.isfinite(float(v)) else None for v in values]


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, 'metrics.json')


def read_metrics(workdir: str) -> dict:
  """The metrics written so far, or {} when there are none."""
  path = metrics_path(workdir)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def write_metrics(workdir: str, payload: dict):
  """Replaces <workdir>/metrics.json with `payload`, atomically."""
  write_json(metrics_path(workdir), payload)


def pid_alive(pid: int) -> bool:
  """Whether process `pid` still runs (a temporary named for a live writer is not stale)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, another user's.
    return True
  return True
