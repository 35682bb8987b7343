"""Model zoo, user models, base training and the checkpoint cache."""

from prunetune.models.checkpoint import (
    BaseModel,
    build_for,
    get_base_model,
    read_checkpoint,
    save_checkpoint,
)
from prunetune.models.factory import create_model  # imports the zoo, which registers itself
from prunetune.models.registry import MODELS, model_names, register_model
from prunetune.models.training import (
    Recipe,
    evaluate,
    pruned_lr,
    recalibrate_bn,
    resolve_device,
    train,
)

__all__ = [
    "MODELS",
    "BaseModel",
    "Recipe",
    "pruned_lr",
    "build_for",
    "create_model",
    "evaluate",
    "get_base_model",
    "model_names",
    "read_checkpoint",
    "recalibrate_bn",
    "register_model",
    "resolve_device",
    "save_checkpoint",
    "train",
]
