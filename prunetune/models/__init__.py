"""Model zoo, user models, base training and the checkpoint cache."""
from prunetune.models import zoo as _zoo  # noqa: F401  (registers the zoo)
from prunetune.models.checkpoint import (BaseModel, build_for, get_base_model, read_checkpoint,
                                         save_checkpoint)
from prunetune.models.registry import MODELS, create_model, model_names, register_model
from prunetune.models.training import Recipe, evaluate, recalibrate_bn, resolve_device, train

__all__ = ["MODELS", "BaseModel", "Recipe", "build_for", "create_model", "evaluate",
           "get_base_model", "model_names", "read_checkpoint", "recalibrate_bn", "register_model",
           "resolve_device", "save_checkpoint", "train"]
