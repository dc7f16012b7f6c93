"""Model zoo (build tier: listing or building models loads the families, which imports torch; importing this
package does not). The families register into :mod:`edgecv.zoo.registry`; :mod:`edgecv.zoo.catalog` lists and builds."""

from edgecv.zoo.catalog import create_model, list_models, model_cfg
from edgecv.zoo.registry import MODELS, register_model

__all__ = ["MODELS", "create_model", "list_models", "model_cfg", "register_model"]
