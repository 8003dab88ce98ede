"""--extensions: user modules that register datasets, samplers, SDEs, networks or signatures.

A module is named by its import name (`my_package.my_sampler`, found on
sys.path) or by the path of a .py file. Importing it runs its `register(...)`
calls, which is all an extension does (docs/extending.md). The names are kept
in the run's config.json, so whatever reloads the run (--mode=sample, the
Python API) imports them again. Importing the same module twice is a no-op.
"""

import importlib
import importlib.util
import os
import sys

from ncsn_tf.config import schema


def parse(spec: str) -> list[str]:
  """The modules of a comma-separated --extensions value, blanks dropped."""
  return [part.strip() for part in spec.split(',') if part.strip()]


def load(spec: str) -> list:
  """Imports every module of `spec`; returns them. ConfigError (one line) if one fails."""
  return [_load_one(name) for name in parse(spec)]


def _load_one(name: str):
  try:
    if name.endswith('.py'):
      return _load_file(name)
    return importlib.import_module(name)
  except schema.ConfigError:
    raise
  except Exception as e:  # noqa: BLE001  (any failure of user code: report it in one line)
    raise schema.ConfigError(f'--extensions: importing {name!r} failed: '
                             f'{type(e).__name__}: {e}') from None


def _load_file(path: str):
  """A .py file imported as a module named after it (once per absolute path)."""
  if not os.path.isfile(path):
    raise schema.ConfigError(f'--extensions: {path!r} is not a file')
  absolute = os.path.abspath(path)
  module_name = f'ncsn_tf_extension_{abs(hash(absolute))}'
  if module_name in sys.modules:
    return sys.modules[module_name]
  spec = importlib.util.spec_from_file_location(module_name, absolute)
  module = importlib.util.module_from_spec(spec)
  sys.modules[module_name] = module
  try:
    spec.loader.exec_module(module)
  except BaseException:
    del sys.modules[module_name]
    raise
  return module
