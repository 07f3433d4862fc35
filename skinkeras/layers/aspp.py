"""Atrous Spatial Pyramid Pooling bottleneck (paper 4.1.1)."""

import keras
from keras import layers


def conv_bn_relu(filters, kernel_size=1, dilation_rate=1, name=None, bn_momentum=0.99):
    """Conv2D (no bias) -> BatchNorm -> ReLU as one Sequential sublayer.

    Args:
        filters: output channels.
        kernel_size: convolution kernel size.
        dilation_rate: atrous rate.
        name: name of the Sequential.
        bn_momentum: moving-average momentum of the BatchNormalization.
    """
    return keras.Sequential(
        [
            layers.Conv2D(filters, kernel_size, padding="same", dilation_rate=dilation_rate, use_bias=False),
            layers.BatchNormalization(momentum=bn_momentum),
            layers.ReLU(),
        ],
        name=name,
    )


@keras.saving.register_keras_serializable(package="skinkeras")
class ASPP(layers.Layer):
    """Parallel atrous 3x3 convolutions plus a 1x1 convolution, concatenated and fused.

    Paper 4.1.1: "parallel atrous (dilated) convolutions with different dilation
    rates (e.g., 1, 2, and 3) and a 1x1 convolution". Every branch is
    Conv-BN-ReLU; the concatenation is fused back to `filters` channels by a
    1x1 Conv-BN-ReLU, followed by optional dropout.

    Args:
        filters: channels of every branch and of the fused output.
        rates: dilation rates of the 3x3 branches.
        dropout: dropout rate after fusion (0 disables it).
        bn_momentum: moving-average momentum of the inner BatchNormalization layers (0.99 Keras' default;
            the builders pass 0.9, PyTorch's default that the paper used).
    """

    def __init__(self, filters=256, rates=(1, 2, 3), dropout=0.0, bn_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.rates = tuple(int(r) for r in rates)
        self.dropout = float(dropout)
        self.bn_momentum = float(bn_momentum)
        self.branches = [conv_bn_relu(self.filters, 1, name="pointwise", bn_momentum=self.bn_momentum)] + [
            conv_bn_relu(self.filters, 3, rate, name=f"atrous_r{rate}", bn_momentum=self.bn_momentum)
            for rate in self.rates
        ]
        self.fuse = conv_bn_relu(self.filters, 1, name="fuse", bn_momentum=self.bn_momentum)
        self.drop = layers.Dropout(self.dropout)

    def build(self, input_shape):
        for branch in self.branches:
            branch.build(input_shape)
        self.fuse.build(tuple(input_shape[:-1]) + (self.filters * len(self.branches),))

    def call(self, inputs, training=None):
        x = keras.ops.concatenate([b(inputs, training=training) for b in self.branches], axis=-1)
        x = self.fuse(x, training=training)
        return self.drop(x, training=training) if self.dropout > 0 else x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "rates": list(self.rates),
                "dropout": self.dropout,
                "bn_momentum": self.bn_momentum,
            }
        )
        return config
