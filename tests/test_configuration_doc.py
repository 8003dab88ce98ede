"""docs/configuration.md is generated from the Config fields, and the generic flags
are the flags of before: same names, kinds, defaults, plumbing and resume-safety."""

import dataclasses
import os
import re

import pytest
from absl import flags
from conftest import REPO_ROOT

from ncsn_tf import api
from ncsn_tf import config as config_lib
from ncsn_tf.config import docs as configuration_doc
from ncsn_tf.config import flags as ncsn_flags

# Every flag as ncsn_tf/config/flags.py defined it by hand before the flags were made
# from the Config fields (read from that version of the file): name, kind, default.
FLAGS_BEFORE = [
    ('batch_size', 'integer', 128),
    ('beta1', 'float', 0.9),
    ('conditional_norm', 'bool', True),
    ('config_name', 'string', None),
    ('data_dir', 'string', None),
    ('data_path', 'string', None),
    ('dataset', 'string', 'gmm'),
    ('denoise', 'bool', False),
    ('deterministic', 'bool', False),
    ('ema_rate', 'float', 0.0),
    ('eval_batch_size', 'integer', 500),
    ('eval_checkpoints', 'string', 'latest'),
    ('eval_samples', 'integer', 50000),
    ('experiment', 'enum', 'all'),
    ('export_dir', 'string', None),
    ('heldout_batches', 'integer', 4),
    ('image_size', 'integer', 32),
    ('inception_kind', 'string', 'fid_graph'),
    ('inception_path', 'string', ''),
    ('inpaint_completions', 'integer', 4),
    ('inpaint_mask', 'string', 'right'),
    ('jit_compile', 'bool', False),
    ('learning_rate', 'float', 0.001),
    ('level_log_mean', 'float', -1.2),
    ('level_log_std', 'float', 1.2),
    ('level_sampling', 'string', 'uniform'),
    ('log_freq', 'integer', 100),
    ('logit_transform', 'bool', False),
    ('loss', 'string', 'anneal_dsm'),
    ('lr_schedule', 'string', 'constant'),
    ('max_checkpoints', 'integer', 5),
    ('max_chunk_steps', 'integer', 100),
    ('mode', 'enum', 'train'),
    ('model', 'string', 'mlp'),
    ('n_steps_each', 'integer', 100),
    ('ngf', 'integer', 128),
    ('num_cpu_replicas', 'integer', 0),
    ('num_inpaint_images', 'integer', 8),
    ('num_layers', 'integer', 3),
    ('num_projections', 'integer', 1),
    ('num_samples', 'integer', 1280),
    ('num_scales', 'integer', 10),
    ('num_snapshots', 'integer', 10),
    ('precision', 'string', 'auto'),
    ('preconditioning', 'string', 'none'),
    ('projection', 'enum', 'gaussian'),
    ('random_flip', 'bool', True),
    ('reference_images', 'integer', 0),
    ('reference_split', 'string', 'train'),
    ('reference_stats', 'string', ''),
    ('sample_batch_size', 'integer', 1280),
    ('scale_by_sigma', 'bool', True),
    ('seed', 'integer', 0),
    ('sigma_begin', 'float', 20.0),
    ('sigma_data', 'float', 0.25),
    ('sigma_end', 'float', 1.0),
    ('skip_nonfinite', 'bool', False),
    ('snapshot_freq', 'integer', 1000),
    ('step_lr', 'float', 0.05),
    ('strategy', 'enum', 'auto'),
    ('summary_samples', 'integer', 16),
    ('train_minutes', 'float', 0.0),
    ('train_steps', 'integer', 5000),
    ('unet_norm', 'string', 'group'),
    ('warmup_steps', 'integer', 0),
    ('workdir', 'string', None),
]

# config.RESUME_SAFE_FIELDS as it was written by hand before `setting(resume_safe=True)`.
RESUME_SAFE_BEFORE = frozenset({
    'name', 'workdir', 'mode', 'experiment', 'data.data_dir', 'data.data_path',
    'train.train_steps', 'train.train_minutes', 'train.snapshot_freq', 'train.log_freq',
    'train.max_checkpoints', 'train.heldout_batches', 'train.num_cpu_replicas',
    'train.jit_compile', 'train.strategy', 'train.skip_nonfinite', 'train.deterministic',
    'train.max_chunk_steps', 'export.export_dir'}) | frozenset(
        f'sampling.{f.name}' for f in dataclasses.fields(config_lib.SamplingConfig))

_KINDS = {flags.ArgumentParser: 'string', flags.IntegerParser: 'integer',
          flags.FloatParser: 'float', flags.BooleanParser: 'bool', flags.EnumParser: 'enum'}


def test_the_committed_page_is_what_the_script_writes():
  with open(os.path.join(REPO_ROOT, 'docs', 'configuration.md'), encoding='utf-8') as f:
    committed = f.read()
  assert committed == configuration_doc.render(), (
      f'docs/configuration.md is stale: run {configuration_doc.COMMAND}')
  assert configuration_doc.main(['--check']) == 0


def test_the_page_lists_every_flag_and_says_it_is_generated():
  text = configuration_doc.render()
  assert 'do not edit it by hand' in text
  assert configuration_doc.COMMAND in text
  assert 'Adding a setting is one field with its metadata plus its validation, nothing\nelse' in text
  rows = re.findall(r'^\| `--(\w+)` \|', text, flags=re.MULTILINE)
  assert sorted(rows) == sorted(s.flag for s in config_lib.settings())
  assert set(rows) >= {name for name, _, _ in FLAGS_BEFORE}
  assert '| `--batch_size` | `train.batch_size` | integer | `128` |  | no | Global batch size. |' in text
  assert '| `--workdir` | `workdir` | string | `runs/<config name>` |' in text
  assert '| `--strategy` | `train.strategy` | enum | `auto` | `auto`, `mirrored`, `multi_worker` | yes |' in text


def test_every_flag_of_before_exists_with_its_kind_and_default():
  defined = {s.flag for s in config_lib.settings()}
  assert defined >= {name for name, _, _ in FLAGS_BEFORE}  # Settings are added, never lost.
  for name, kind, default in FLAGS_BEFORE:
    flag = ncsn_flags.FLAGS[name]
    assert (_KINDS[type(flag.parser)], flag.default) == (kind, default), name
  for name in ('mode', 'experiment', 'projection', 'strategy'):
    setting = next(s for s in config_lib.settings() if s.flag == name)
    assert ncsn_flags.FLAGS[name].parser.enum_values == list(setting.choices)


def test_resume_safe_fields_are_those_of_before():
  # Later settings may add resume-safe fields (the SDE samplers', the evaluation's and the export's settings, the
  # VE prior's mean, which training never reads); none of before may become
  # unsafe, nor another model, data or training field safe.
  added = config_lib.RESUME_SAFE_FIELDS - RESUME_SAFE_BEFORE
  assert config_lib.RESUME_SAFE_FIELDS >= RESUME_SAFE_BEFORE
  assert all(f.startswith(('sampling.', 'eval.', 'export.')) or f in ('model.prior_mean', 'extensions')
             for f in added), added


def _parsed(argv, monkeypatch):
  monkeypatch.setattr(config_lib, 'validate', lambda config: config)
  ncsn_flags.FLAGS(argv)
  try:
    return ncsn_flags.build_config(argv)
  finally:
    ncsn_flags.FLAGS.unparse_flags()


def _other_value(setting):
  """A command-line value unlike the field's default, and the value the field then holds."""
  default = setting.default
  if setting.choices:
    value = next(c for c in setting.choices if c != default)
  elif setting.value_type is bool:
    value = not default
  elif setting.value_type is int:
    value = (default or 0) + 3
  elif setting.value_type is float:
    value = (default or 0.0) + 0.5
  else:
    value = f'custom_{setting.flag}'
  text = str(value).lower() if isinstance(value, bool) else str(value)
  return f'--{setting.flag}={text}', value


def test_build_config_fills_every_field_from_its_flag(monkeypatch):
  pairs = [(s, *_other_value(s)) for s in config_lib.settings()]
  config = _parsed(['run.py', *(arg for _, arg, _ in pairs)], monkeypatch)
  for setting, arg, value in pairs:
    assert setting.get(config) == value, arg


def test_unset_flags_give_the_dataclass_defaults_and_the_derived_names(monkeypatch):
  flagfile = os.path.join(REPO_ROOT, 'tf_configs', 'toy_gmm.cfg')
  config = _parsed(['run.py', f'--flagfile={flagfile}', '--seed=0'], monkeypatch)
  assert (config.name, config.workdir, config.export.export_dir) == (
      'toy_gmm', os.path.join('runs', 'toy_gmm'), os.path.join('saved_models', 'toy_gmm'))
  config = _parsed(['run.py', '--config_name=mine', '--workdir='], monkeypatch)
  assert (config.name, config.workdir, config.export.export_dir) == (
      'mine', os.path.join('runs', 'mine'), os.path.join('saved_models', 'mine'))
  config = _parsed(['run.py'], monkeypatch)
  expected = config_lib.Config(name='default', workdir=os.path.join('runs', 'default'),
                               export=config_lib.ExportConfig(os.path.join('saved_models', 'default')))
  assert config == expected


def test_renamed_flags_fill_their_fields(monkeypatch):
  config = _parsed(['run.py', '--eval_samples=7', '--eval_batch_size=3', '--eval_checkpoints=all',
                    '--model=unet', '--num_samples=5'], monkeypatch)
  assert (config.eval.num_samples, config.eval.batch_size, config.eval.checkpoints,
          config.model.name, config.sampling.num_samples) == (7, 3, 'all', 'unet', 5)


def test_a_choice_outside_its_values_is_a_config_error_naming_the_flag(tmp_path):
  config = config_lib.Config(workdir=str(tmp_path / 'w'),
                             export=config_lib.ExportConfig(str(tmp_path / 'e')))
  with pytest.raises(config_lib.ConfigError, match=r"^--loss: must be one of anneal_dsm, .*got 'l2'$"):
    config_lib.validate(config.replace(train={'loss': 'l2'}))
  # Names the registries hold are checked by their own check_config (api.validate).
  with pytest.raises(config_lib.ConfigError, match=r"^--model: must be one of mlp, refinenet, unet"):
    api.validate(config.replace(model={'name': 'vit'}))


def test_only_flags_py_uses_absl_flags():
  # flags.py alone defines and reads absl's global FLAGS; flagfile.py parses with a
  # FlagValues of its own (Config.from_flagfile), which touches no global state.
  package = os.path.join(REPO_ROOT, 'ncsn_tf')
  users, global_readers = [], []
  for root, _, files in os.walk(package):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        with open(path, encoding='utf-8') as f:
          text = f.read()
        if re.search(r'^\s*from absl import flags|^\s*import absl.flags', text, re.MULTILINE):
          users.append(os.path.relpath(path, REPO_ROOT))
        if re.search(r'\bflags\.FLAGS\b|from absl.flags import FLAGS', text):
          global_readers.append(os.path.relpath(path, REPO_ROOT))
  assert sorted(users) == [os.path.join('ncsn_tf', 'config', name)
                           for name in ('flagfile.py', 'flags.py')]
  assert global_readers == [os.path.join('ncsn_tf', 'config', 'flags.py')]