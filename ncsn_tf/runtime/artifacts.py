"""<workdir>/metrics.json: the one place that reads and writes it.

Writes go to a temporary file that is renamed into place, so a reader (or a
killed run) never sees half a file; `write_json` does the same for other JSON
outputs (samples/shape_fit.json).
"""

import json
import math
import os


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, 'metrics.json')


def read_metrics(workdir: str) -> dict:
  """The metrics written so far, or {} when there are none."""
  path = metrics_path(workdir)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def json_floats(values) -> list:
  """Floats for JSON: NaN and ±inf (e.g. a σ level with no held-out example) become null."""
  return [float(v) if math.isfinite(float(v)) else None for v in values]


def write_json(path: str, payload: dict):
  """Replaces the JSON file at `path` with `payload`, atomically."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def write_metrics(workdir: str, payload: dict):
  """Replaces <workdir>/metrics.json with `payload`, atomically."""
  write_json(metrics_path(workdir), payload)
