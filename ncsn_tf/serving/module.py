"""The exported module: one tf.function per served signature, restorable by a model server.

`ScoreModule` serves every entry of the signature registry
(serving/signatures.py) that applies to the export (or those that
--export_signatures names, with `score`), in registry order, plus
`serving_default` = `score`, beside the variables `sigmas` (the ladder), the
string `config_json` (the run's Config), the string `sampler` (the
sampler's name and settings, e.g. `ode(rtol=1e-05, ...)`) and the int32
`max_batch` (--export_max_batch: the most examples one request may ask for). serving/export.py
writes it as a numbered SavedModel version; the signatures' contract is the
table of saved_models/README.md, generated from the registry.

Loadable by a model server. TF Serving (C++ `LoadSavedModel`), `saved_model_cli
run` and `tf.compat.v1.saved_model.loader.load` restore variables through the
SavedModel's saver, by the names of the variable nodes its signatures read.
A Keras 3 variable is a wrapper around the `tf.Variable` that the traced
functions capture; tracking the wrappers (or the Keras model) saves the values
under the wrappers' names, and the session loader then fails with "Could not
find variable". So the module tracks exactly the variables its signatures
capture (`_track_captured_variables`, the approach of Keras' own
`ExportArchive`), after tracing them. Every signature, including one a
registry entry adds from outside the package, is therefore built before the
variables are collected, and is in `ScoreModule.signatures()`;
tests/test_serving.py runs each builtin one (and an extension's) through both
the session loader and `tf.saved_model.load` in a fresh process.
"""

import functools

import numpy as np
import tensorflow as tf

from ncsn_tf import config as config_lib
from ncsn_tf.data import pipeline as data_lib
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import samplers
from ncsn_tf.serving import signatures as signatures_lib

#: Annealed Langevin's uniform starting points (kept here under its old name).
initial_state = configured.uniform_initial_state


class ScoreModule(tf.Module):
  """The exported module; build with the (EMA) score model and the Config.

  score_model: a ScoreModel (TrainState.score_model) or a ladder network
  s(x, sigma_index), which is wrapped with `sigmas`.
  classifier: None, or a guidance.Classifier: `sample_class` then uses
  classifier guidance, and its variables are saved with the score model's.
  on_traced: None, or fn(done, total, name) called as each signature is traced.

  Each applicable signature is an attribute of its name (`module.sample(num,
  seed)`); `context` is the signatures.ExportContext their bodies read.
  """

  def __init__(self, score_model, config: config_lib.Config, sigmas: np.ndarray,
               classifier=None, on_traced=None):
    super().__init__(name='ncsn')
    score_model = configured.as_score_model(score_model, sigmas)
    self.sigmas = tf.Variable(np.asarray(sigmas, np.float32), trainable=False, name='sigmas')
    self.config_json = tf.Variable(config.to_json(), trainable=False, name='config_json')
    self.sampler = tf.Variable(samplers.describe(config.sampling), trainable=False,
                               name='sampler')
    self.max_batch = tf.Variable(config.export.max_batch, dtype=tf.int32, trainable=False,
                                 name='max_batch')
    shape = tuple(data_lib.data_shape(config.data))
    # Not tracked (set past tf.Module's attribute tracking): a tracked Keras 3
    # model adds its own single-input serving function, which this model cannot
    # trace, and its variables would be saved under the Keras wrappers' names
    # (see the module docstring); the traced functions capture what they read.
    self.__dict__['context'] = signatures_lib.ExportContext(
        config=config, score_model=score_model, sigmas=self.sigmas, max_batch=self.max_batch,
        data_shape=shape,
        sampler=configured.ConfiguredSampler(config, score_model, shape),
        guidance=signatures_lib.guidance_for(score_model, classifier))
    entries = signatures_lib.applicable(self.context)
    for entry in entries:
      if hasattr(self, entry.name):
        raise ValueError(f'signature {entry.name!r} would hide the module attribute of that name')
      setattr(self, entry.name, _served_function(entry, self.context))
    self.__dict__['signature_names'] = tuple(entry.name for entry in entries)
    # Last: tracing every signature here is what finds the variables to save.
    self.model_variables = _track_captured_variables(self.signatures(), on_traced)

  def signatures(self) -> dict:
    """{signature key: tf.function}: the applicable entries, then `serving_default`."""
    functions = {name: getattr(self, name) for name in self.signature_names}
    return {**functions, 'serving_default': functions[signatures_lib.SERVING_DEFAULT]}


def _served_function(entry: signatures_lib.Signature, context):
  """entry.fn with the context bound, a tf.function of the entry's input specs.

  The specs' names are the signature's input keys; an unnamed one would be
  served as `args_0`, so it is refused here.
  """
  specs = list(entry.input_specs(context))
  unnamed = [i for i, spec in enumerate(specs) if not spec.name]
  if unnamed:
    raise ValueError(f'signature {entry.name!r}: input specs {unnamed} have no name')
  # A partial keeps fn's parameter names: module.sample(num_samples=..., seed=...).
  return tf.function(functools.partial(entry.fn, context), input_signature=specs)


def _track_captured_variables(functions: dict, on_traced=None) -> list:
  """The variables the traced `functions` ({name: tf.function}) read, each once.

  on_traced: None, or fn(done, total, name) called after each function is traced
  (tracing a sampler or the likelihood's solver takes seconds each: progress).

  (Within one function, in the order of TF's set of watched variables, which
  can differ between processes; the saver restores by name, not by position.)

  Tracing with the input signatures happens here, so it must come after every
  signature is defined; the returned list, assigned to the module, makes the
  saver write each variable under the name its variable node has in the graph.
  """
  captured = {}
  for done, (name, function) in enumerate(functions.items(), 1):
    for variable in function.get_concrete_function().variables:
      captured.setdefault(id(variable), variable)
    if on_traced is not None:
      on_traced(done, len(functions), name)
  return list(captured.values())
