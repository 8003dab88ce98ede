"""Every absl flag of `run.py`, and the one function that turns them into a Config.

This is the only module that defines or reads absl's global FLAGS. The flags are
not listed here: each is defined from its Config field (`config.setting`: name,
help, allowed values; the type from the field's annotation) by
ncsn_tf/config/flagfile.py, which builds the Config from them the same way for
`run.py` and for `Config.from_flagfile` in Python. Adding a setting is one field
in ncsn_tf/config/schema.py (plus its check in `config.validate`). Defaults are
the dataclass defaults, so a flagfile is a short list of overrides;
docs/configuration.md lists them all.
"""

from absl import flags

from ncsn_tf import config as config_lib
from ncsn_tf.config import flagfile

FLAGS = flagfile.define_flags(flags.FLAGS)

config_name_from_argv = flagfile.config_name_from_argv


def build_config(argv) -> config_lib.Config:
  """A validated Config from the parsed FLAGS; raises ConfigError.

  A setting with a derived default (the config name, --workdir, --export_dir)
  takes it when its flag is unset or empty; the config name comes first, as the
  others are made from it.
  """
  return config_lib.validate(flagfile.config_of_flags(FLAGS, argv))
