"""The run configuration: schema (the settings), validation and resume rules."""

from ncsn_tf.config.schema import (  # noqa: F401
    MODES, INCEPTION_KINDS, UNET_SIZE_MULTIPLE, LOSSES, PROJECTIONS, EXPERIMENTS,
    CONTINUOUS_EXPERIMENTS, IMAGE_EXPERIMENTS, PRECISIONS, STRATEGIES, LR_SCHEDULES, LEVEL_SAMPLINGS,
    PRECONDITIONINGS, UNET_NORMS, NOISE_EMBEDDINGS, LIKELIHOOD_SOURCES, HUTCHINSON_PROBES,
    SPLITS, TASKS, GUIDANCES, PREDICTORS, CORRECTORS, SOLVER_ORDERS, SIGMA_SCHEDULES,
    CONDITION_METHODS, STEP_CONTROLS, ConfigError, setting, DataConfig,
    ModelConfig, TrainConfig, SamplingConfig, ExportConfig, EvalConfig, Config, GROUPS, Setting,
    settings)
from ncsn_tf.config.validate import (  # noqa: F401
    validate, tf_config_cluster, num_workers, read_json)
from ncsn_tf.config.resume import (  # noqa: F401
    RESUME_SAFE_FIELDS, resume_mismatches)
from ncsn_tf.config import flagfile  # noqa: E402

# `Config.from_flagfile('tf_configs/toy_gmm.cfg', **overrides)`: the command line's
# parsing and checks from Python (config/flagfile.py). Attached here because
# flagfile.py builds Configs, so schema.py, which defines Config, cannot import it.
Config.from_flagfile = staticmethod(flagfile.from_flagfile)
