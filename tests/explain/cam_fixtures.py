"""A small TDBN whose CAMs are well conditioned, shared by the in-process and the cross-backend tests."""

import keras
import numpy as np


def quadrant_images(rng, n, size=64):
    """Images of four flat-coloured quadrants plus noise: at 64 px the 2x2 tokens differ, as in real images.

    (Uniform noise makes every token alike, and attention over alike tokens has nothing to choose.)
    """
    images = rng.normal(0, 20, (n, size, size, 3))
    half = size // 2
    for i in range(n):
        for top in (0, half):
            for left in (0, half):
                images[i, top:top + half, left:left + half] += rng.uniform(0, 255, 3)
    return np.clip(images, 0, 255).astype("float32")


def cam_inputs(n=6, seed=0, size=64):
    rng = np.random.default_rng(seed)
    return {"original": quadrant_images(rng, n, size), "segmented": quadrant_images(rng, n, size),
            "metadata": rng.normal(size=(n, 12)).astype("float32"),
            "metadata_mask": (np.arange(n) % 3 != 1).astype("float32")[:, None]}


def calibrated_tdbn(seed=0, n=32, image_size=64, **small):
    """MobileNetV2-TDBN with BatchNorm statistics estimated on `n` images, as after training.

    An untrained net in inference mode shrinks its activations layer by layer
    (BN statistics (0, 1)), which leaves class scores and gradients near zero
    and the maps dominated by round-off. Statistics from a few images are no
    better: near-constant channels get a tiny variance whose inverse square
    root amplifies float round-off layer after layer.

    Built with BatchNorm momentum 0, so that one training-mode pass makes the
    moving statistics these batch statistics.

    Args:
        seed: weights and calibration images.
        n: calibration images.
        image_size: input side (64: 2x2 maps at stride 32).
        small: other `build_tdbn` arguments (smaller widths).
    """
    from skinkeras.models.tdbn import build_tdbn

    keras.utils.set_random_seed(seed)
    model = build_tdbn(7, image_size, "mobilenetv2", None, "tdbn", num_features=12, bn_momentum=0.0, **small)
    model(cam_inputs(n, seed=seed + 100, size=image_size), training=True)
    return model
