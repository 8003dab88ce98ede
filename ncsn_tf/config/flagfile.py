"""Configs from flagfiles and flag names, from Python, with the command line's own checks.

`run.py` turns flags into a Config through ncsn_tf/config/flags.py, which holds
absl's global FLAGS. Python callers get the same parsing without touching
those globals: every function here defines the same flags (one per Config
field, `schema.setting`) on a fresh `absl.flags.FlagValues`, parses with it
and builds the Config the way `flags.build_config` does, so a typo, a bad
type, a value outside an enum or a bad combination fails with the same
one-line `ConfigError` naming the flag:

    config = Config.from_flagfile('tf_configs/toy_gmm.cfg', train_steps=2000)
    config = with_flags(config, {'sampler', 'snr'}, sampler='pc', snr=0.1)

A flagfile is a path, or the name of one of the repository's tf_configs/
files ('cifar10' is tf_configs/cifar10.cfg). Override values are Python
values (True, 1e-3, 'pc') written as the flag's text and parsed by its own
parser. TensorFlow-free.
"""

import os

from absl import flags

from ncsn_tf.config import schema
from ncsn_tf.config.validate import validate

#: The repository's flagfiles, which a bare config name ('cifar10') refers to.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'tf_configs')
#: The program name absl expects as argv[0].
_PROGRAM = 'ncsn_tf'

_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           bool: flags.DEFINE_bool}


def define_flags(flag_values: flags.FlagValues) -> flags.FlagValues:
  """Defines one flag per setting on `flag_values` (its name, help, type, enum); returns it."""
  for setting in schema.settings():
    default = None if setting.derived else setting.default
    if setting.enum:
      flags.DEFINE_enum(setting.flag, default, setting.choices, setting.help,
                        flag_values=flag_values)
    else:
      _DEFINE[setting.value_type](setting.flag, default, setting.help, flag_values=flag_values)
  return flag_values


def config_name_from_argv(argv) -> str:
  """The name of the last --flagfile in `argv` without directory and .cfg."""
  name = 'default'
  for arg in argv:
    if arg.startswith('--flagfile='):
      name = os.path.splitext(os.path.basename(arg.split('=', 1)[1]))[0]
  return name


def config_of_flags(flag_values: flags.FlagValues, argv) -> schema.Config:
  """The Config of parsed `flag_values`, not yet validated.

  A setting with a derived default (the config name, --workdir, --export_dir)
  takes it when its flag is unset or empty; the config name comes first, as the
  others are made from it. `argv` names the flagfile the config name comes from.
  """
  values = {s.path: flag_values[s.flag].value for s in schema.settings()}
  templates = {'flagfile': config_name_from_argv(argv)}
  for s in schema.settings():  # 'name' is the first setting: the others may use it.
    if s.derived and not values[s.path]:
      values[s.path] = s.derived.format(**templates)
    templates.setdefault('name', values['name'])
  top = {path: value for path, value in values.items() if '.' not in path}
  for group, cls in schema.GROUPS.items():
    top[group] = cls(**{path.split('.', 1)[1]: value for path, value in values.items()
                        if path.startswith(group + '.')})
  return schema.Config(**top)


def _flag_text(value) -> str:
  """A Python value as its flag's text: True -> 'true', 1e-3 -> '0.001'."""
  if isinstance(value, bool):
    return 'true' if value else 'false'
  return str(value)


def _parse(argv) -> flags.FlagValues:
  """A fresh FlagValues with every flag, after parsing `argv`; ConfigError on a bad flag."""
  flag_values = define_flags(flags.FlagValues())
  try:
    flag_values([_PROGRAM, *argv])
  except flags.UnrecognizedFlagError as e:
    raise schema.ConfigError(f'--{e.flagname}: no such flag (docs/configuration.md lists '
                             f'them all)') from None
  except flags.Error as e:
    # absl says 'flag --snr=x: could not parse...', over several lines for an enum:
    # one line, starting with the flag as every ConfigError does.
    raise schema.ConfigError(' '.join(str(e).split()).removeprefix('flag ')) from None
  return flag_values


def resolve_flagfile(path: str) -> str:
  """`path` if it is a file, else tf_configs/<path>.cfg of the repository; ConfigError if neither."""
  if os.path.isfile(path):
    return path
  named = os.path.join(CONFIG_DIR, f'{path}.cfg')
  if os.sep not in path and not path.endswith('.cfg') and os.path.isfile(named):
    return named
  raise schema.ConfigError(f'--flagfile: no flagfile {path!r} (a path, or a name of '
                           f'tf_configs/: {", ".join(sorted(_config_names()))})')


def _config_names():
  if not os.path.isdir(CONFIG_DIR):
    return []
  return [os.path.splitext(n)[0] for n in os.listdir(CONFIG_DIR) if n.endswith('.cfg')]


def from_flagfile(path: str, **overrides) -> schema.Config:
  """The validated Config of a flagfile with `overrides` by flag name, as `run.py` builds it.

  Args:
    path: a flagfile ('tf_configs/toy_gmm.cfg'), or the name of one in the
      repository's tf_configs/ ('toy_gmm').
    **overrides: flag name -> value (`train_steps=2000`, `sampler='pc'`,
      `random_flip=False`), applied after the flagfile as on a command line.

  Raises ConfigError (a ValueError) naming the flag: an unknown flag, a value
  its parser or validation refuses, a missing flagfile.
  """
  path = resolve_flagfile(path)
  argv = [f'--flagfile={path}'] + [f'--{name}={_flag_text(value)}'
                                   for name, value in overrides.items()]
  return validate(config_of_flags(_parse(argv), argv))


def from_argv(argv) -> schema.Config:
  """The validated Config of command-line flags (`['--flagfile=tf_configs/cifar10.cfg',
  '--workdir=runs/x']`), parsed as run.py parses them; ConfigError naming the flag."""
  argv = list(argv)
  return validate(config_of_flags(_parse(argv), argv))


def with_flags(config: schema.Config, allowed=None, **values) -> schema.Config:
  """`config` with some settings replaced by flag name, parsed and validated as flags are.

  allowed: None (any flag), or the flag names that may change here (e.g. a
  sampler's settings); another flag raises ConfigError listing them. Raises
  ConfigError naming the flag on a value its parser or validation refuses.
  """
  if not values:
    return config
  for name in values:
    if allowed is not None and name not in allowed:
      raise schema.ConfigError(f'--{name}: not a setting that may change here; these may: '
                               f'{", ".join(sorted(allowed))}')
  parsed = _parse([f'--{name}={_flag_text(value)}' for name, value in values.items()])
  by_flag = {s.flag: s for s in schema.settings()}
  changes = {}
  for name in values:
    group, _, field = by_flag[name].path.rpartition('.')
    changes.setdefault(group, {})[field] = parsed[name].value
  top = changes.pop('', {})
  return validate(config.replace(**top, **changes))
