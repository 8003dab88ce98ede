"""Which settings may change between runs on one workdir, and what changed.

A workdir's checkpoints belong to its model, data and optimisation; settings
marked `resume_safe` (how long, how often, where and how a run executes, what
it samples and measures) may differ when the run is resumed or reused.
"""

from ncsn_tf.config import schema

#: Fields that may change between runs on one workdir (`setting(..., resume_safe=True)`):
#: they change how long, how often, where and how a run executes, not which model it trains.
RESUME_SAFE_FIELDS = frozenset(s.path for s in schema.settings() if s.resume_safe)


_FLAG_NAMES = {s.path: s.flag for s in schema.settings()}


def _flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def resume_mismatches(saved: dict, config: schema.Config) -> list[str]:
  """'field: saved -> new' for each model/data/training field that differs.

  `saved` is a workdir's config.json. A field it lacks was added after that
  workdir was written, and its default is the behaviour from before it existed
  (a U-Net without --unet_norm had GroupNorm), so the default stands in for it.
  """
  old = {**_flatten(schema.Config().to_dict()), **_flatten(saved)}
  new = _flatten(config.to_dict())
  def flag(key):
    return _FLAG_NAMES.get(key, key.split('.')[-1])
  return [f'--{flag(key)} {old[key]!r} -> {new[key]!r}' for key in sorted(new)
          if key in old and key not in RESUME_SAFE_FIELDS and old[key] != new[key]]
