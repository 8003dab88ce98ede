"""The served signatures are registry entries, and the READMEs' signature tables are
generated from them: a stale committed table fails here, as docs/configuration.md
does in tests/test_configuration_doc.py. No export: these take seconds."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from ncsn_tf import config as config_lib
from ncsn_tf.serving import docs as serving_docs
from ncsn_tf.serving import signatures

BUILTINS = ('score', 'score_sigma', 'sample', 'inpaint', 'colorize', 'log_likelihood',
            'sample_class')


@pytest.mark.parametrize('page', serving_docs.PAGES, ids=lambda p: p.path)
def test_the_committed_signature_tables_are_what_the_command_writes(page):
  committed = serving_docs.read(page)
  assert committed == serving_docs.render(page, committed), (
      f'the signature table of {page.path} is stale: run {serving_docs.COMMAND}')


def test_the_check_mode_passes_on_the_committed_pages():
  assert serving_docs.main(['--check']) == 0


def test_a_registered_signature_gets_its_row_and_leaves_with_unregister():
  entry = signatures.register(signatures.Signature(
      name='doc_probe', input_specs=lambda c: [c.x_spec()], fn=lambda c, x: {'x': x},
      inputs='`x` float32 [N, *data_shape]', outputs='`x` float32 [N, *data_shape]',
      doc='Echoes x.', when='toys', see='docs/usage.md'))
  try:
    assert signatures.names()[-1] == 'doc_probe'
    readme, served = (serving_docs.table(page) for page in serving_docs.PAGES)
    assert readme.splitlines()[-1] == ('| `doc_probe` (toys; [docs](docs/usage.md)) | '
                                       '`x` float32 [N, *data_shape] | `x` float32 [N, *data_shape] |')
    assert served.splitlines()[-1].endswith('| Echoes x. |')
    assert '../docs/usage.md' in served
  finally:
    assert signatures.unregister('doc_probe') is entry
  assert signatures.names() == BUILTINS


def test_the_builtin_signatures_in_the_order_of_the_tables():
  assert signatures.names() == BUILTINS
  with pytest.raises(ValueError, match='builtin'):
    signatures.unregister('score')
  readme_rows = serving_docs.table(serving_docs.PAGES[0]).splitlines()[2:]
  assert [row.split('`')[1] for row in readme_rows] == list(BUILTINS)
  assert '`score` (= `serving_default`)' in readme_rows[0]


@pytest.mark.parametrize('name,message', [
    ('score', 'already registered'), ('serving_default', 'cannot name'),
    ('sigmas', 'cannot name'), ('variables', 'cannot name'), ('_hidden', 'cannot name'),
    ('two words', 'cannot name')])
def test_register_refuses_names_a_signature_cannot_take(name, message):
  entry = dataclasses.replace(signatures.get_signature('score'), name=name)
  with pytest.raises(ValueError, match=message):
    signatures.register(entry)
  assert signatures.names() == BUILTINS


def _context(dataset='gmm', image_size=8, logit_transform=False, sde='none',
             noise_embedding='ladder', num_classes=0, classifier=None):
  """The context an export of this configuration gives its entries (no network built:
  `applies` reads only the config, the data shape and the model's kind)."""
  config = config_lib.Config(
      data=config_lib.DataConfig(dataset=dataset, image_size=image_size,
                                 logit_transform=logit_transform),
      model=config_lib.ModelConfig(sde=sde, noise_embedding=noise_embedding))
  from ncsn_tf.data import pipeline as data_lib
  model = _KindOnly(is_continuous=noise_embedding == 'fourier', num_classes=num_classes)
  return signatures.ExportContext(
      config=config, score_model=model, sigmas=tf.Variable(np.ones(3, np.float32)),
      data_shape=tuple(data_lib.data_shape(config.data)), sampler=None,
      guidance=signatures.guidance_for(model, classifier))


@dataclasses.dataclass
class _KindOnly:
  is_continuous: bool
  num_classes: int


@dataclasses.dataclass
class _Classifier:
  num_classes: int


@pytest.mark.parametrize('kwargs,expected', [
    ({}, ('score', 'score_sigma', 'sample')),
    ({'sde': 've', 'noise_embedding': 'fourier'}, ('score', 'score_sigma', 'sample',
                                                    'log_likelihood')),
    ({'dataset': 'shapes'}, ('score', 'score_sigma', 'sample', 'inpaint', 'colorize')),
    ({'dataset': 'shapes', 'logit_transform': True}, ('score', 'score_sigma', 'sample',
                                                      'inpaint')),
    ({'dataset': 'mnist'}, ('score', 'score_sigma', 'sample', 'inpaint')),
    ({'num_classes': 3}, ('score', 'score_sigma', 'sample', 'sample_class')),
    ({'classifier': _Classifier(2)}, ('score', 'score_sigma', 'sample', 'sample_class')),
])
def test_which_signatures_an_export_has(kwargs, expected):
  context = _context(**kwargs)
  assert tuple(s.name for s in signatures.applicable(context)) == expected
  if 'sample_class' in expected:
    kind = 'classifier' if 'classifier' in kwargs else 'free'
    assert (context.guidance.kind, context.guidance.num_classes) == (
        kind, kwargs.get('num_classes') or 2)


def test_input_specs_are_named_and_shaped_from_the_data():
  context = _context(dataset='shapes')
  specs = {s.name: s.input_specs(context) for s in signatures.applicable(context)}
  assert [spec.name for spec in specs['inpaint']] == ['images', 'mask', 'seed']
  assert specs['inpaint'][0].shape.as_list() == [None, 8, 8, 3]
  assert specs['colorize'][0].shape.as_list() == [None, 8, 8, None]  # Grey or RGB.
  assert [(spec.name, spec.dtype) for spec in specs['sample']] == [
      ('num_samples', tf.int32), ('seed', tf.int32)]
