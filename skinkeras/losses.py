"""Segmentation losses: BCE + Dice (paper Eq. 1-4)."""

import keras
from keras import ops

AUX_LOSS_WEIGHTS = {"mask": 1.0, "aux1": 0.2, "aux2": 0.1}


def soft_dice_loss(y_true, y_pred, smooth=1.0):
    """Per-image soft Dice loss (Eq. 1), one value per image.

    Args:
        y_true: (B, H, W, 1) binary masks.
        y_pred: (B, H, W, 1) probabilities.
        smooth: epsilon of Eq. 1, keeps empty masks finite.
    """
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = tuple(range(1, len(y_pred.shape)))
    inter = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


@keras.saving.register_keras_serializable(package="skinkeras")
class BCEDiceLoss(keras.losses.Loss):
    """Binary cross-entropy plus soft Dice loss (paper Eq. 3), per image.

    Deep supervision (Eq. 4) is the same loss on each output, weighted by
    `AUX_LOSS_WEIGHTS` through `loss_weights` in `compile`.

    Args:
        smooth: epsilon of the Dice term.
        bce_weight: weight of the BCE term.
        dice_weight: weight of the Dice term.
    """

    def __init__(self, smooth=1.0, bce_weight=1.0, dice_weight=1.0, name="bce_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        bce = keras.losses.binary_crossentropy(y_true, y_pred)  # (B, H, W)
        bce = ops.mean(ops.reshape(bce, (ops.shape(bce)[0], -1)), axis=-1)
        return self.bce_weight * bce + self.dice_weight * soft_dice_loss(y_true, y_pred, self.smooth)

    def get_config(self):
        config = super().get_config()
        config.update({"smooth": self.smooth, "bce_weight": self.bce_weight, "dice_weight": self.dice_weight})
        return config
