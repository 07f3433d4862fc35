"""Pretrained weights offline: PyTorch state dicts read without PyTorch, installed checkpoints, converted caches.

This room sits below `models/`: it knows files and packages, not architectures (the name mapping of a
checkpoint lives with its builder, e.g. `skinkeras.models.efficientnet_lite`).
"""

from skinkeras.pretrained.packages import (
    LITE_PACKAGES,
    WEIGHTS_EXTRA,
    WeightsUnavailableError,
    keras_cache_dir,
    load_converted,
    packaged_checkpoint,
    save_converted,
)
from skinkeras.pretrained.torch_file import CheckpointError, read_state_dict

__all__ = [
    "CheckpointError",
    "LITE_PACKAGES",
    "WEIGHTS_EXTRA",
    "WeightsUnavailableError",
    "keras_cache_dir",
    "load_converted",
    "packaged_checkpoint",
    "read_state_dict",
    "save_converted",
]
