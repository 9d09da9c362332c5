"""ViT classification: the model, its configs, and timm / Google checkpoint loading."""

from attnvision.vit.checkpoints import load_checkpoint, read_state_dict, save_checkpoint
from attnvision.vit.configs import ALIASES, CONFIGS, ViTConfig, get_config
from attnvision.vit.model import VisionTransformer, create_model

__all__ = [
    "ALIASES",
    "CONFIGS",
    "ViTConfig",
    "VisionTransformer",
    "create_model",
    "get_config",
    "load_checkpoint",
    "read_state_dict",
    "save_checkpoint",
]
