"""Depthwise Attention Gated (DAG) skip connection (paper 4.1.1)."""

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="skinkeras")
class DepthwiseAttentionGate(layers.Layer):
    """Refines an encoder skip with a depthwise separable conv and a sigmoid spatial mask.

    Paper 4.1.1: "Each DAG block comprises ... a Depthwise Separable Convolution
    (DSC) for efficient, fine-grained feature processing, and a Skip Attention
    mechanism ... a small convolutional sub-network (with sigmoid activation)
    that generates an attention mask over the encoder's feature map."

    The paper does not say whether the mask also sees the decoder. We follow
    the attention-gate design it builds on: the mask is computed from the
    refined skip *and* the upsampled decoder feature at the same resolution
    (additive gating), so the decoder's coarse lesion estimate tells the gate
    where to look. Called on `[skip, gate]`; returns the masked skip with
    `filters` channels.

    Args:
        filters: channels of the refined skip.
        inter_filters: channels of the attention sub-network (default filters // 2).
        bn_momentum: moving-average momentum of the inner BatchNormalization layers (0.99 Keras' default;
            the builders pass 0.9, PyTorch's default that the paper used).
    """

    def __init__(self, filters, inter_filters=None, bn_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.inter_filters = int(inter_filters) if inter_filters else max(1, self.filters // 2)
        self.bn_momentum = float(bn_momentum)
        self.dsc = keras.Sequential(
            [
                layers.SeparableConv2D(self.filters, 3, padding="same", use_bias=False),
                layers.BatchNormalization(momentum=self.bn_momentum),
                layers.ReLU(),
            ],
            name="dsc",
        )
        self.theta_skip = layers.Conv2D(self.inter_filters, 1, use_bias=False, name="theta_skip")
        self.phi_gate = layers.Conv2D(self.inter_filters, 1, use_bias=True, name="phi_gate")
        self.psi = keras.Sequential(
            [
                layers.ReLU(),
                layers.Conv2D(1, 1),
                layers.BatchNormalization(momentum=self.bn_momentum),
                layers.Activation("sigmoid"),
            ],
            name="psi",
        )

    def build(self, input_shape):
        skip_shape, gate_shape = input_shape
        self.dsc.build(skip_shape)
        refined = tuple(skip_shape[:-1]) + (self.filters,)
        self.theta_skip.build(refined)
        self.phi_gate.build(gate_shape)
        self.psi.build(tuple(skip_shape[:-1]) + (self.inter_filters,))

    def attention_mask(self, inputs, training=None):
        """Returns the refined skip and its (batch, H, W, 1) attention mask in [0, 1]."""
        skip, gate = inputs
        refined = self.dsc(skip, training=training)
        mask = self.psi(self.theta_skip(refined) + self.phi_gate(gate), training=training)
        return refined, mask

    def call(self, inputs, training=None):
        refined, mask = self.attention_mask(inputs, training=training)
        return refined * mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"filters": self.filters, "inter_filters": self.inter_filters, "bn_momentum": self.bn_momentum}
        )
        return config
