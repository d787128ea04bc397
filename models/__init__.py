"""Attention-augmented ResNets (SGE, SE, GC, spatial attention, CBAM, ECA), faithful to the official code.

The public names below are imported on first use, so that the torch-free helpers in this package
(``models.atomic``: atomic writes and file hashes; ``models.transforms``: image decoding) can be imported on a
deployment machine that has no PyTorch.
"""

from models.lazy import lazy_getattr

_LAZY = {
    "CheckpointError": "models.checkpoints",
    "LoadReport": "models.checkpoints",
    "load_checkpoint": "models.checkpoints",
    "FeatureTooSmallError": "models.layers",
    "MODEL_CONFIGS": "models.registry",
    "ModelConfig": "models.registry",
    "UnknownModelError": "models.registry",
    "build_model": "models.registry",
    "create_model": "models.registry",
    "get_config": "models.registry",
    "list_models": "models.registry",
    "InputShapeError": "models.resnet",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr("models", _LAZY)
