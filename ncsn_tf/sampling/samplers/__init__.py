"""Every builtin sampler, registered on import; and the registry's functions.

One module per sampler, each ending with `registry.register(SamplerSpec(...))`
(ncsn_tf/sampling/samplers/registry.py says what a spec holds). Importing this package
registers them all, so use the registry through it:

    from ncsn_tf.sampling import samplers
    sampler = samplers.make_sampler('heun', sde, num_steps=18)
    samples, nfe = sampler(score_fn, x_init, seed)
"""

from ncsn_tf.sampling.samplers.registry import (  # noqa: F401
    SamplerSpec, SettingError, check_config, describe, get_sampler, make_sampler, names, register,
    resolve_settings, settings_from)
# The builtins, each registering itself on import; this order is the registry's
# (--help, the docs, error messages).
from ncsn_tf.sampling.samplers import ald  # noqa: F401,E402
from ncsn_tf.sampling.samplers import pc  # noqa: F401,E402
from ncsn_tf.sampling.samplers import ode  # noqa: F401,E402
from ncsn_tf.sampling.samplers import heun  # noqa: F401,E402
from ncsn_tf.sampling.samplers import dpm_solver  # noqa: F401,E402
from ncsn_tf.sampling.samplers import edm_stochastic  # noqa: F401,E402
from ncsn_tf.sampling.samplers import adaptive_sde  # noqa: F401,E402
from ncsn_tf.sampling.samplers.pc import get_corrector, get_predictor  # noqa: F401,E402
