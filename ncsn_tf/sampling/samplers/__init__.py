"""Every builtin sampler, registered on import; and the registry's functions.

One module per sampler, each ending with `registry.register(SamplerSpec(...))`
(ncsn_tf/sampling/samplers/registry.py says what a spec holds). Importing this package
registers them all, so use the registry through it:

    from ncsn_tf.sampling import samplers
    sampler = samplers.make_sampler('heun', sde, num_steps=18)
    samples, nfe = sampler(score_fn, x_init, seed)
"""

from ncsn_tf.sampling.samplers import ald  # noqa: F401  (registers)
from ncsn_tf.sampling.samplers import heun  # noqa: F401
from ncsn_tf.sampling.samplers import ode  # noqa: F401
from ncsn_tf.sampling.samplers import pc  # noqa: F401
from ncsn_tf.sampling.samplers.pc import get_corrector  # noqa: F401
from ncsn_tf.sampling.samplers.pc import get_predictor  # noqa: F401
from ncsn_tf.sampling.samplers.registry import check_config  # noqa: F401
from ncsn_tf.sampling.samplers.registry import describe  # noqa: F401
from ncsn_tf.sampling.samplers.registry import get_sampler  # noqa: F401
from ncsn_tf.sampling.samplers.registry import make_sampler  # noqa: F401
from ncsn_tf.sampling.samplers.registry import names  # noqa: F401
from ncsn_tf.sampling.samplers.registry import register  # noqa: F401
from ncsn_tf.sampling.samplers.registry import resolve_settings  # noqa: F401
from ncsn_tf.sampling.samplers.registry import SamplerSpec  # noqa: F401
from ncsn_tf.sampling.samplers.registry import SettingError  # noqa: F401
from ncsn_tf.sampling.samplers.registry import settings_from  # noqa: F401
