"""Attention-augmented ResNets (SGE, SE, GC, spatial attention, CBAM, ECA), faithful to the official code."""

from models.checkpoints import CheckpointError, LoadReport, load_checkpoint
from models.layers import FeatureTooSmallError
from models.registry import (
    MODEL_CONFIGS,
    ModelConfig,
    UnknownModelError,
    build_model,
    create_model,
    get_config,
    list_models,
)
from models.resnet import InputShapeError

__all__ = [
    "MODEL_CONFIGS",
    "CheckpointError",
    "FeatureTooSmallError",
    "InputShapeError",
    "LoadReport",
    "ModelConfig",
    "UnknownModelError",
    "build_model",
    "create_model",
    "get_config",
    "list_models",
    "load_checkpoint",
]
