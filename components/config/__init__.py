"""Typed configuration, the ground floor of the import graph: one pydantic model per
`params.yaml` section, split by concern, importing neither torch nor onnxruntime nor any stage.
"""

from components.config.architectures import (
    ArchConfig,
    CNNConfig,
    DSCNNConfig,
    MLPConfig,
    ResNetConfig,
)
from components.config.base import Section, TrainingConfig, plugin_names
from components.config.data import IngestConfig, SplitConfig, ValidateConfig
from components.config.deployment import Budgets, ConvertConfig, DeviceProfile, EvaluateConfig
from components.config.params import (
    PARAMS_FILE,
    ConfigError,
    Params,
    load_params,
    merge_params,
    parse_params,
)
from components.config.prune import PruneConfig
from components.config.quantize import QuantizeConfig
from components.config.registry import (
    HIGHER_IS_BETTER,
    NotifyConfig,
    PromotionPolicy,
    RegisterConfig,
    ScheduleConfig,
    TrackingConfig,
)
from components.config.training import DistillConfig, TeachersConfig

__all__ = [
    "HIGHER_IS_BETTER", "PARAMS_FILE", "ArchConfig", "Budgets", "CNNConfig", "ConfigError",
    "ConvertConfig", "DSCNNConfig", "DeviceProfile", "DistillConfig", "EvaluateConfig",
    "IngestConfig", "MLPConfig", "NotifyConfig", "Params", "PromotionPolicy", "PruneConfig",
    "QuantizeConfig", "RegisterConfig", "ResNetConfig", "ScheduleConfig", "Section",
    "SplitConfig", "TeachersConfig", "TrackingConfig", "TrainingConfig", "ValidateConfig",
    "load_params", "merge_params", "parse_params", "plugin_names",
]
