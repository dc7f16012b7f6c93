"""Typed recipe schema (pydantic v2). ``load_recipe(path)`` validates a YAML recipe before anything heavy runs.

No torch here: config sits below every tier (DESIGN.md import direction).
"""

from edgecv.config.schema import (
    AugmentConfig,
    BenchConfig,
    CompileTarget,
    DataConfig,
    DistillConfig,
    ExportConfig,
    ModelConfig,
    OptimizerConfig,
    QuantizeConfig,
    Recipe,
    RewriteConfig,
    ScheduleConfig,
    SynthConfig,
    TrainConfig,
    ValidateConfig,
    load_recipe,
    parse_recipe,
)

__all__ = [
    "AugmentConfig",
    "BenchConfig",
    "CompileTarget",
    "DataConfig",
    "DistillConfig",
    "ExportConfig",
    "ModelConfig",
    "OptimizerConfig",
    "QuantizeConfig",
    "Recipe",
    "RewriteConfig",
    "ScheduleConfig",
    "SynthConfig",
    "TrainConfig",
    "ValidateConfig",
    "load_recipe",
    "parse_recipe",
]
