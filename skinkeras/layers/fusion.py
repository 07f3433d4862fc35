"""Additive fusion of visual and tabular features gated by metadata availability (paper 5.5, Eq. 9)."""

import keras
from keras import layers


def availability_gate(availability, like):
    """Availability (B, 1) as a (B, 1) gate of the dtype of `like`, ready to broadcast over its last axis.

    Args:
        availability: per-sample metadata availability in {0, 1}.
        like: tensor whose dtype the gate takes.
    """
    return keras.ops.cast(keras.ops.reshape(availability, (-1, 1)), like.dtype)


@keras.saving.register_keras_serializable(package="skinkeras")
class MaskedAdditiveFusion(layers.Layer):
    """Adds the tabular features to the visual ones where metadata is available: F = F_vision + alpha * F_tabular.

    Paper 5.5, Eq. 9: `alpha` is the binary availability mask (not a learned
    weight), "set to zero when metadata is unavailable", so a sample without
    metadata is classified from its visual features alone. Addition keeps the
    width, so both inputs must already be projected to the same D. Called on
    `[vision (B, D), tabular (B, D), availability (B, 1)]`; returns (B, D).
    No weights.
    """

    def build(self, input_shape):
        vision_shape, tabular_shape, _ = input_shape
        if vision_shape[-1] is not None and tabular_shape[-1] is not None and vision_shape[-1] != tabular_shape[-1]:
            raise ValueError(
                f"Additive fusion needs equal widths; got vision {vision_shape[-1]} and tabular {tabular_shape[-1]}"
            )

    def call(self, inputs):
        vision, tabular, availability = inputs
        alpha = availability_gate(availability, vision)
        return vision + alpha * keras.ops.cast(tabular, vision.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
