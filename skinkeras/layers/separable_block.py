"""Separable double convolution of the Deep-UNet decoder (paper 4.1.1)."""

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="skinkeras")
class SeparableDoubleConv(layers.Layer):
    """Two depthwise-separable 3x3 Conv-BN-ReLU blocks in sequence.

    Paper 4.1.1: the decoder refines each upsampled, skip-concatenated feature
    map with depthwise separable convolutions to keep the model small.

    Args:
        filters: output channels of both convolutions.
        kernel_size: spatial size of the depthwise kernels.
        bn_momentum: moving-average momentum of the inner BatchNormalization layers (0.99 Keras' default;
            the builders pass 0.9, PyTorch's default that the paper used).
    """

    def __init__(self, filters, kernel_size=3, bn_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.bn_momentum = float(bn_momentum)
        self.block = keras.Sequential(
            [
                layers.SeparableConv2D(self.filters, self.kernel_size, padding="same", use_bias=False),
                layers.BatchNormalization(momentum=self.bn_momentum),
                layers.ReLU(),
                layers.SeparableConv2D(self.filters, self.kernel_size, padding="same", use_bias=False),
                layers.BatchNormalization(momentum=self.bn_momentum),
                layers.ReLU(),
            ],
            name="double_conv",
        )

    def build(self, input_shape):
        self.block.build(input_shape)

    def call(self, inputs, training=None):
        return self.block(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "kernel_size": self.kernel_size, "bn_momentum": self.bn_momentum})
        return config
