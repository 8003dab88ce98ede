"""Every absl flag of `run.py`, and the one function that turns them into a Config.

This is the only module that defines or reads FLAGS. The flags are not listed
here: each is defined from its Config field (`config.setting`: name, help,
allowed values; the type from the field's annotation), and `build_config` fills
every field from its flag, so adding a setting is one field in ncsn_tf/config/schema.py
(plus its check in `config.validate`). Defaults are the dataclass defaults, so a
flagfile is a short list of overrides; docs/configuration.md lists them all.
"""

import os

from absl import flags

from ncsn_tf import config as config_lib

FLAGS = flags.FLAGS

_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           bool: flags.DEFINE_bool}


def _define(setting: config_lib.Setting):
  default = None if setting.derived else setting.default
  if setting.enum:
    flags.DEFINE_enum(setting.flag, default, setting.choices, setting.help)
  else:
    _DEFINE[setting.value_type](setting.flag, default, setting.help)


for _setting in config_lib.settings():
  _define(_setting)


def config_name_from_argv(argv) -> str:
  """The name of the last --flagfile in `argv` without directory and .cfg."""
  name = 'default'
  for arg in argv:
    if arg.startswith('--flagfile='):
      name = os.path.splitext(os.path.basename(arg.split('=', 1)[1]))[0]
  return name


def build_config(argv) -> config_lib.Config:
  """A validated Config from the parsed FLAGS; raises ConfigError.

  A setting with a derived default (the config name, --workdir, --export_dir)
  takes it when its flag is unset or empty; the config name comes first, as the
  others are made from it.
  """
  values = {s.path: FLAGS[s.flag].value for s in config_lib.settings()}
  templates = {'flagfile': config_name_from_argv(argv)}
  for s in config_lib.settings():  # 'name' is the first setting: the others may use it.
    if s.derived and not values[s.path]:
      values[s.path] = s.derived.format(**templates)
    templates.setdefault('name', values['name'])
  top = {path: value for path, value in values.items() if '.' not in path}
  for group, cls in config_lib.GROUPS.items():
    top[group] = cls(**{path.split('.', 1)[1]: value for path, value in values.items()
                        if path.startswith(group + '.')})
  return config_lib.validate(config_lib.Config(**top))
