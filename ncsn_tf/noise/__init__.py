"""Noise: the σ ladder and the SDEs."""

from ncsn_tf.noise.ladder import (  # noqa: F401
    geometric_sigmas, ladder_ratio, langevin_variance_ratio, best_step_lr, nearest_level_index,
    LADDER_RTOL, level_index, Ladder)
from ncsn_tf.noise.sde import (  # noqa: F401
    expand_to, SDE, VESDE, LinearBetaSDE, VPSDE, SubVPSDE, register_sde, sde_names, build_sde,
    check_sde_config)
