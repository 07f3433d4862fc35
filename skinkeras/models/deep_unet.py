"""Deep-UNet: EfficientNetB3 encoder, ASPP bottleneck, DAG skips, deep supervision (paper 4.1.1)."""

import keras
from keras import layers

from skinkeras.layers import ASPP, DepthwiseAttentionGate, SeparableDoubleConv
from skinkeras.models.contract import AUX_OUTPUTS, IMAGE, MASK, SEGMENTATION, Contract, SkinModel
from skinkeras.models.encoders import ENCODERS, build_encoder, encoder_features, encoder_spec, preprocess_layer
from skinkeras.models.layout import require_channels_last
from skinkeras.models.common import BN_MOMENTUM, image_size_pair

DEFAULT_DECODER_FILTERS = (256, 128, 64, 32, 16)


def encoder_pyramid(inputs, encoder_name, weights, image_size, levels=None, bn_momentum=BN_MOMENTUM):
    """Preprocesses 0-255 `inputs` and returns the encoder's feature maps (strides 2, 4, 8, 16, 32).

    Args:
        inputs: the model's image Input (0-255 RGB).
        encoder_name: name from the encoder table.
        weights: "imagenet", None, or a weights path.
        image_size: (H, W) of the input.
        levels: indices of the maps to return (default all five); the encoder is cut after the deepest.
        bn_momentum: momentum of the encoder's BatchNormalization layers.
    """
    require_channels_last("The segmentation models")
    if not encoder_spec(encoder_name).segmentation:
        valid = ", ".join(name for name, spec in ENCODERS.items() if spec.segmentation)
        raise ValueError(f"Encoder {encoder_name!r} has no stride-aligned skips for segmentation; valid: {valid}")
    encoder = build_encoder(encoder_name, (*image_size, 3), weights=weights, model_name=f"{encoder_name}_encoder",
                            bn_momentum=bn_momentum)
    features = encoder_features(encoder_name, encoder)
    if levels is not None:
        features = [features[i] for i in levels]
    feature_model = keras.Model(encoder.input, features, name=f"{encoder_name}_features")
    x = preprocess_layer(encoder_name)(inputs)
    return feature_model(x)


def mask_head(x, name, upsample=1):
    """1x1 sigmoid mask head, bilinearly upsampled to full resolution for auxiliary levels.

    Args:
        x: decoder feature map.
        name: output name.
        upsample: integer upsampling factor to the input resolution.
    """
    if upsample > 1:
        x = layers.Conv2D(1, 1, name=f"{name}_logits")(x)
        x = layers.UpSampling2D(upsample, interpolation="bilinear", name=f"{name}_up")(x)
        return layers.Activation("sigmoid", dtype="float32", name=name)(x)
    return layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name=name)(x)


def build_deep_unet(
    image_size=224,
    encoder="efficientnetb3",
    weights="imagenet",
    decoder_filters=DEFAULT_DECODER_FILTERS,
    aspp_filters=256,
    aspp_rates=(1, 2, 3),
    aspp_dropout=0.1,
    deep_supervision=True,
    bn_momentum=BN_MOMENTUM,
):
    """Builds Deep-UNet as a functional model taking 0-255 RGB images.

    Paper 4.1.1 / Figure 1: encoder -> ASPP bottleneck -> five decoder levels,
    each a Conv2DTranspose x2 upsampling, a DAG-refined encoder skip
    concatenated to it (levels 1-4; the full-resolution level has no skip),
    and a separable double conv; a 1x1 sigmoid head gives the mask. With deep
    supervision, the decoder levels at 1/4 ("aux1", loss weight 0.2) and 1/8
    ("aux2", 0.1) resolution get their own heads, upsampled to full size.

    Args:
        image_size: int or (H, W), multiples of 32.
        encoder: encoder name from the encoder table.
        weights: "imagenet", None, or a path to encoder weights.
        decoder_filters: channels of the five decoder levels, deepest first.
        aspp_filters: channels of the ASPP branches.
        aspp_rates: ASPP dilation rates.
        aspp_dropout: dropout after ASPP fusion.
        deep_supervision: add the two auxiliary outputs (for training).
        bn_momentum: momentum of every BatchNormalization layer, the encoder's included.

    Returns:
        A model whose output is a dict {"mask", "aux1", "aux2"} with deep
        supervision, else the (B, H, W, 1) mask.
    """
    size = image_size_pair(image_size, multiple=32)
    if len(decoder_filters) != 5:
        raise ValueError(f"decoder_filters needs 5 values (one per decoder level), got {decoder_filters}")
    inputs = keras.Input((*size, 3), name=IMAGE)
    *skips, x = encoder_pyramid(inputs, encoder, weights, size, bn_momentum=bn_momentum)
    x = ASPP(aspp_filters, aspp_rates, aspp_dropout, bn_momentum=bn_momentum, name="aspp")(x)

    aux = {}
    for level, filters in enumerate(decoder_filters):
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"dec{level}_up")(x)
        if level < 4:
            skip = DepthwiseAttentionGate(filters, bn_momentum=bn_momentum, name=f"dec{level}_dag")([skips[3 - level], x])
            x = layers.Concatenate(name=f"dec{level}_concat")([x, skip])
        x = SeparableDoubleConv(filters, bn_momentum=bn_momentum, name=f"dec{level}_conv")(x)
        if deep_supervision and level in (1, 2):
            # level 2 is at 1/4 resolution (closer to the output, weight 0.2), level 1 at 1/8.
            name = AUX_OUTPUTS[2 - level]
            aux[name] = mask_head(x, name, upsample=2 ** (4 - level))
    mask = mask_head(x, MASK)
    outputs = {MASK: mask, **aux} if deep_supervision else mask
    return segmentation_model(inputs, outputs, "deep_unet")


def segmentation_model(inputs, outputs, name):
    """Wraps a segmentation graph as a `SkinModel` with its contract (input `image`, main output `mask`).

    Args:
        inputs: the image Input.
        outputs: the mask tensor, or a dict with the main mask under `mask` and auxiliary masks.
        name: model (and registry) name.
    """
    return SkinModel(inputs, outputs, name=name, contract=Contract(SEGMENTATION, (IMAGE,), MASK, arch=name))
