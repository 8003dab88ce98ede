"""A quiet console for the package, on the command line and in a notebook alike.

TensorFlow writes notices to stderr that read as failures on a CPU machine: as
its libraries load, "WARNING: All log messages before absl::InitializeLog()"
and I0000 lines (oneDNN, "Could not find cuda drivers"); at the first op an
E0000 "failed call to cuInit"; and loading one of this package's exports, an
absl WARNING per solver function, "Importing a function ... with ops with
unsaved custom gradients. Will likely fail if a gradient is requested" (the
exports leave the ODE solvers' gradients out on purpose: serving/export.py).

`quiet_tensorflow()` runs when `ncsn_tf` is imported (its __init__; this
module imports nothing of TensorFlow, so it runs before TensorFlow loads):

* unless the user set TF_CPP_MIN_LOG_LEVEL, it is set to 3, which hides the
  C++ runtime's logs once TensorFlow runs (fatal errors still show);
* the first `import tensorflow` after it (by the package or the user) runs
  with fd 2 captured, and what was written is replayed without the native
  notices (`quiet_native_output`): Python warnings, tracebacks and fatal
  errors still show;
* the custom-gradient warnings of loading a SavedModel are dropped.

Set TF_CPP_MIN_LOG_LEVEL (0 shows everything) to keep TensorFlow's own logs: then
none of this happens. A process that imported TensorFlow before ncsn_tf has
already printed its load notices.
"""

import contextlib
import importlib.util
import logging
import os
import re
import sys
import tempfile

#: A C++ log line (absl/TSL format: severity, date, time, thread, file:line]) or
#: absl's notice that logging is not initialised yet.
NATIVE_NOTICE = re.compile(
    r'(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR'
    r'|[IWE]\d{4} [\d:.]+ +\d+ [^ ]+:\d+\] )')
#: The warning tf.saved_model.load logs (through absl) per function whose
#: custom gradients were not saved.
UNSAVED_GRADIENTS = re.compile(r'Importing a function .* with ops with unsaved custom gradients')
#: TensorFlow's warning that a tf.function was traced again (polymorphic_function.py).
RETRACING = re.compile(r'triggered tf\.function retracing')
#: The level that hides TensorFlow's C++ logs below FATAL.
QUIET_LEVEL = '3'

_state = {'quiet': None}


def quiet() -> bool:
  """Whether the package quiets TensorFlow (the user did not set TF_CPP_MIN_LOG_LEVEL)."""
  if _state['quiet'] is None:
    _state['quiet'] = 'TF_CPP_MIN_LOG_LEVEL' not in os.environ
  return _state['quiet']


@contextlib.contextmanager
def quiet_native_output(enabled: bool = True):
  """Drops the C++ notices written to stderr (fd 2) inside the block.

  fd 2 goes to a temporary file for the block; afterwards every other line
  (Python warnings, tracebacks, fatal C++ errors) is written to the real stderr.
  """
  if not enabled:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      text = capture.read().decode('utf-8', errors='replace')
      sys.stderr.write(''.join(line for line in text.splitlines(keepends=True)
                               if not NATIVE_NOTICE.match(line)))
      sys.stderr.flush()


class _DropUnsavedGradientWarnings(logging.Filter):
  """Drops tf.saved_model.load's warning about this package's gradient-free solvers."""

  def filter(self, record) -> bool:
    return not UNSAVED_GRADIENTS.search(record.getMessage())


class _QuietTensorFlowImport:
  """A sys.meta_path finder that makes the first `import tensorflow` quiet, then leaves."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname != 'tensorflow':
      return None
    sys.meta_path.remove(self)
    spec = importlib.util.find_spec(fullname)
    if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
      return spec
    exec_module = spec.loader.exec_module

    def quiet_exec_module(module):
      with quiet_native_output():
        exec_module(module)

    spec.loader.exec_module = quiet_exec_module  # This spec's own loader object only.
    return spec


_FILTER = _DropUnsavedGradientWarnings()


def quiet_tensorflow():
  """Quiets TensorFlow as the module docstring says, once; nothing if the user set
  TF_CPP_MIN_LOG_LEVEL."""
  if not quiet():
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', QUIET_LEVEL)
  if 'tensorflow' not in sys.modules and not any(
      isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowImport())
  for name in ('absl', 'tensorflow'):  # load.py logs through absl; TF's own logger beside it.
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
      logger.addFilter(_FILTER)


class _HideTensorFlowInfo(logging.Filter):
  """Drops INFO records logged from TensorFlow's own modules (saver, SavedModel builder)."""

  def __init__(self, package_dir: str):
    super().__init__()
    self._prefix = package_dir + os.sep

  def filter(self, record) -> bool:
    return record.levelno > logging.INFO or not record.pathname.startswith(self._prefix)


def hide_tensorflow_info(handler: logging.Handler):
  """For a command line that logs at INFO (run.py, through absl's `handler`): TensorFlow's
  own Python INFO records are dropped (its warnings still show). Call once TensorFlow is
  loaded; nothing when the user set TF_CPP_MIN_LOG_LEVEL."""
  tensorflow = sys.modules.get('tensorflow')
  if not quiet() or tensorflow is None:
    return
  tensorflow.get_logger().setLevel(logging.WARNING)
  handler.addFilter(_HideTensorFlowInfo(os.path.dirname(tensorflow.__file__)))


class _DropRetracingWarnings(logging.Filter):

  def filter(self, record) -> bool:
    return not RETRACING.search(record.getMessage())


@contextlib.contextmanager
def expected_retracing():
  """Inside the block TensorFlow's "triggered tf.function retracing" warnings are dropped:
  for loops that run a function with new settings on purpose (each a graph of its own,
  e.g. the sampler comparison of ncsn_tf/lab/), where the warning is not a defect."""
  logger, drop = logging.getLogger('tensorflow'), _DropRetracingWarnings()
  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)


class _DropUnrestoredWarnings(logging.Filter):

  def filter(self, record) -> bool:
    return not UNRESTORED.search(record.getMessage())


#: TensorFlow's warnings, at exit, about a checkpoint restore that was abandoned.
UNRESTORED = re.compile(r'being deleted with unrestored values|Value in checkpoint could not be '
                        r'found in the restored object')


def drop_unrestored_warnings():
  """After a refused restore (runtime/checkpoints.py `restore_checked`), TensorFlow warns, as
  the half-restored objects are freed, that values went unrestored: that is the refusal
  already said in one line, so those warnings are dropped from then on."""
  logger = logging.getLogger('tensorflow')
  if not any(isinstance(f, _DropUnrestoredWarnings) for f in logger.filters):
    logger.addFilter(_DropUnrestoredWarnings())

