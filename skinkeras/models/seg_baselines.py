"""Segmentation baselines of paper Table 1 (U-Net, U-Net++, DeepLabV3+) on the encoder table."""

import keras
from keras import layers

from skinkeras.layers import ASPP
from skinkeras.models.contract import IMAGE, MASK
from skinkeras.models.common import BN_MOMENTUM, image_size_pair
from skinkeras.models.deep_unet import (
    DEFAULT_DECODER_FILTERS,
    encoder_pyramid,
    mask_head,
    segmentation_model,
)


def conv_block(x, filters, name, convs=2, bn_momentum=BN_MOMENTUM):
    """`convs` x (3x3 Conv-BN-ReLU), the plain U-Net decoder block.

    Args:
        x: input tensor.
        filters: output channels.
        name: name prefix.
        convs: number of convolutions.
        bn_momentum: BatchNormalization momentum.
    """
    for i in range(convs):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def _start(image_size, encoder, weights, bn_momentum, levels=None):
    size = image_size_pair(image_size, multiple=32)
    inputs = keras.Input((*size, 3), name=IMAGE)
    return inputs, encoder_pyramid(inputs, encoder, weights, size, levels, bn_momentum=bn_momentum)


def build_unet(image_size=224, encoder="efficientnetb3", weights="imagenet", decoder_filters=DEFAULT_DECODER_FILTERS,
               bn_momentum=BN_MOMENTUM):
    """U-Net (Ronneberger et al.) decoder on a table encoder: upsample x2, concat skip, two 3x3 convs per level.

    Args:
        image_size: int or (H, W), multiples of 32.
        encoder: encoder name.
        weights: "imagenet", None or a weights path.
        decoder_filters: channels of the five decoder levels, deepest first.
        bn_momentum: momentum of every BatchNormalization layer, the encoder's included.
    """
    inputs, (*skips, x) = _start(image_size, encoder, weights, bn_momentum)
    for level, filters in enumerate(decoder_filters):
        x = layers.UpSampling2D(2, name=f"dec{level}_up")(x)
        if level < 4:
            x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[3 - level]])
        x = conv_block(x, filters, f"dec{level}", bn_momentum=bn_momentum)
    return segmentation_model(inputs, {MASK: mask_head(x, MASK)}, "unet")


def build_unetpp(image_size=224, encoder="efficientnetb3", weights="imagenet", decoder_filters=DEFAULT_DECODER_FILTERS,
                 bn_momentum=BN_MOMENTUM):
    """U-Net++ (Zhou et al.): nested, densely connected skip pathways between encoder levels.

    Node X[i][j] (level i at stride 2^(i+1), column j) convolves the
    concatenation of X[i][0..j-1] and the upsampled X[i+1][j-1]; the top node
    X[0][4] (stride 2) is upsampled to full resolution and refined.

    Args:
        image_size: int or (H, W), multiples of 32.
        encoder: encoder name.
        weights: "imagenet", None or a weights path.
        decoder_filters: channels of the five decoder levels, deepest first.
        bn_momentum: momentum of every BatchNormalization layer, the encoder's included.
    """
    inputs, features = _start(image_size, encoder, weights, bn_momentum)
    # filters by level, shallowest (stride 2) first: decoder_filters[3], [2], [1], [0].
    level_filters = list(reversed(decoder_filters[:4]))
    nodes = {(i, 0): features[i] for i in range(5)}
    for j in range(1, 5):
        for i in range(0, 5 - j):
            up = layers.UpSampling2D(2, name=f"x{i}{j}_up")(nodes[(i + 1, j - 1)])
            x = layers.Concatenate(name=f"x{i}{j}_concat")([*(nodes[(i, k)] for k in range(j)), up])
            nodes[(i, j)] = conv_block(x, level_filters[i], f"x{i}{j}", bn_momentum=bn_momentum)
    x = layers.UpSampling2D(2, name="final_up")(nodes[(0, 4)])
    x = conv_block(x, decoder_filters[4], "final", bn_momentum=bn_momentum)
    return segmentation_model(inputs, {MASK: mask_head(x, MASK)}, "unetpp")


def build_deeplabv3plus(image_size=224, encoder="efficientnetb3", weights="imagenet", aspp_filters=256,
                        aspp_rates=(6, 12, 18), low_level_filters=48, bn_momentum=BN_MOMENTUM):
    """DeepLabV3+ (Chen et al.): ASPP on the stride-16 features, fused with stride-4 low-level features.

    Args:
        image_size: int or (H, W), multiples of 32.
        encoder: encoder name.
        weights: "imagenet", None or a weights path.
        aspp_filters: ASPP and decoder channels.
        aspp_rates: atrous rates at output stride 16.
        low_level_filters: channels of the projected stride-4 features.
        bn_momentum: momentum of every BatchNormalization layer, the encoder's included.
    """
    # Only the encoder up to stride 16 is part of the model: its last stage would get no gradient.
    inputs, (low, high) = _start(image_size, encoder, weights, bn_momentum, levels=(1, 3))
    x = ASPP(aspp_filters, aspp_rates, dropout=0.1, bn_momentum=bn_momentum, name="aspp")(high)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="aspp_up")(x)
    low = layers.Conv2D(low_level_filters, 1, use_bias=False, name="low_proj")(low)
    low = layers.ReLU(name="low_relu")(layers.BatchNormalization(momentum=bn_momentum, name="low_bn")(low))
    x = layers.Concatenate(name="dec_concat")([x, low])
    x = conv_block(x, aspp_filters, "dec", bn_momentum=bn_momentum)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="final_up")(x)
    return segmentation_model(inputs, {MASK: mask_head(x, MASK)}, "deeplabv3plus")
