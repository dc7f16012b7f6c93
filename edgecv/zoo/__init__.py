"""Model zoo (build tier, needs torch to build a model; listing names does not)."""

from edgecv.zoo.registry import MODELS, create_model, list_models, model_cfg, register_model

__all__ = ["MODELS", "create_model", "list_models", "model_cfg", "register_model"]
