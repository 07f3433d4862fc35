"""The encoder table: name -> constructor, skip layers (1/2 .. 1/16), bottleneck (1/32), preprocessing."""

import os
from dataclasses import dataclass

import keras

from skinkeras.layers.preprocess import EncoderPreprocess
from skinkeras.models import efficientnet_lite
from skinkeras.pretrained import WeightsUnavailableError, keras_cache_dir
from skinkeras.models.layout import CHANNELS_FIRST, CHANNELS_LAST, channels_first_copy, data_format, data_format_scope

_EFFNET_SKIPS = (
    "block2a_expand_activation",
    "block3a_expand_activation",
    "block4a_expand_activation",
    "block6a_expand_activation",
)
_DENSENET_SKIPS = ("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu")


@dataclass(frozen=True)
class EncoderSpec:
    """One row of the encoder table.

    Args:
        constructor: name of the `keras.applications` function, or of the EfficientNet-Lite variant.
        skips: layer names of the feature maps at strides 2, 4, 8 and 16.
        bottleneck: layer name of the stride-32 feature map.
        preprocess: `EncoderPreprocess` mode the encoder expects on 0-255 RGB input.
        segmentation: whether the skips are exact stride-2 halvings (usable by the U-Net decoders).
        source: "keras.applications", or "efficientnet_lite" (`skinkeras.models.efficientnet_lite`, ImageNet
            weights from an installed PyTorch checkpoint).
    """

    constructor: str
    skips: tuple
    bottleneck: str
    preprocess: str
    segmentation: bool = True
    source: str = "keras.applications"


def _lite_spec(variant):
    *skips, bottleneck = efficientnet_lite.feature_layers(variant)
    # Lite takes (x - 127.5) / 127.5, which is the "tf" scaling.
    return EncoderSpec(variant, tuple(skips), bottleneck, "tf", source="efficientnet_lite")


ENCODERS = {
    "efficientnetb0": EncoderSpec("EfficientNetB0", _EFFNET_SKIPS, "top_activation", "raw"),
    "efficientnetb1": EncoderSpec("EfficientNetB1", _EFFNET_SKIPS, "top_activation", "raw"),
    "efficientnetb2": EncoderSpec("EfficientNetB2", _EFFNET_SKIPS, "top_activation", "raw"),
    "efficientnetb3": EncoderSpec("EfficientNetB3", _EFFNET_SKIPS, "top_activation", "raw"),
    "efficientnetb4": EncoderSpec("EfficientNetB4", _EFFNET_SKIPS, "top_activation", "raw"),
    "densenet121": EncoderSpec("DenseNet121", _DENSENET_SKIPS, "relu", "torch"),
    "densenet169": EncoderSpec("DenseNet169", _DENSENET_SKIPS, "relu", "torch"),
    "densenet201": EncoderSpec("DenseNet201", _DENSENET_SKIPS, "relu", "torch"),
    "mobilenetv2": EncoderSpec(
        "MobileNetV2",
        ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu"),
        "out_relu",
        "tf",
    ),
    "resnet50": EncoderSpec(
        "ResNet50",
        ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out"),
        "conv5_block3_out",
        "caffe",
    ),
    # Xception's valid-padded stem gives 109/55/28/14/7 maps at 224 (not exact halvings): fine for
    # classification (the bottleneck), not aligned for the U-Net decoders (inputs >= 71 px).
    "xception": EncoderSpec(
        "Xception",
        ("block1_conv2_act", "block3_sepconv1_act", "block4_sepconv1_act", "block13_sepconv1_act"),
        "block14_sepconv2_act",
        "tf",
        segmentation=False,
    ),
    **{variant: _lite_spec(variant) for variant in efficientnet_lite.VARIANTS},
}


def encoder_spec(name):
    """Returns the table row for `name`, or raises a ValueError that lists the valid names.

    Args:
        name: encoder name, case-insensitive.
    """
    key = str(name).lower()
    if key not in ENCODERS:
        raise ValueError(f"Unknown encoder {name!r}; valid encoders: {', '.join(ENCODERS)}")
    return ENCODERS[key]


def normalize_weights(weights):
    """Maps the CLI spelling (imagenet | none | PATH) to what `build_encoder` takes.

    Args:
        weights: "imagenet", "none"/None, or a path to a weights file.
    """
    if weights is None or str(weights).lower() in ("none", "null", ""):
        return None
    if str(weights).lower() == "imagenet":
        return "imagenet"
    path = os.path.expanduser(str(weights))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file not found: {path} (use --weights imagenet|none|PATH)")
    return path


def build_encoder(name, input_shape, weights=None, model_name=None, bn_momentum=None):
    """Builds a headless `keras.applications` encoder from the table.

    Args:
        name: encoder name from `ENCODERS`.
        input_shape: (H, W, 3) input shape.
        weights: "imagenet", None, or a path to a weights file of the headless encoder
            (e.g. the Keras `*_notop.h5` file copied from a machine with internet); an EfficientNet-Lite also
            takes a PyTorch state dict (`.pth`) with its checkpoint's names, and "imagenet" reads the installed
            checkpoint package (`skinkeras.pretrained`).
        model_name: name of the returned model; two encoders in one model need distinct names.
        bn_momentum: when not None, the moving-average momentum set on every BatchNormalization layer of
            the encoder after it is built and its weights loaded (None keeps keras.applications' own
            values); BatchNormalization's config carries it, so a saved model keeps it.

    Returns:
        The encoder `keras.Model` (input: preprocessed pixels), channels-last; under Keras' channels_first
        image data format a copy with the same weights and layer names on (B, 3, H, W) inputs
        (`skinkeras.models.layout`).
    """
    channels_first = data_format() == CHANNELS_FIRST
    if channels_first:
        from skinkeras.backend_config import data_format_unsupported

        reason = data_format_unsupported(CHANNELS_FIRST)
        if reason:
            raise ValueError(reason)
    with data_format_scope(CHANNELS_LAST):  # keras.applications' DenseNet refuses channels_first
        encoder = _build_channels_last(name, input_shape, weights, model_name, bn_momentum)
    return channels_first_copy(encoder) if channels_first else encoder


def _build_channels_last(name, input_shape, weights, model_name, bn_momentum):
    spec = encoder_spec(name)
    weights = normalize_weights(weights)
    if spec.source == "efficientnet_lite":
        encoder = efficientnet_lite.build_efficientnet_lite(spec.constructor, input_shape, name=model_name)
        if weights is not None:
            efficientnet_lite.load_pretrained(encoder, spec.constructor, weights)
        return _set_momentum(encoder, bn_momentum)
    ctor = getattr(keras.applications, spec.constructor)
    kwargs = {"include_top": False, "input_shape": tuple(input_shape)}
    if model_name:
        kwargs["name"] = model_name
    if weights == "imagenet":
        try:
            encoder = ctor(weights="imagenet", **kwargs)
        except Exception as exc:  # keras raises a bare Exception("URL fetch failure ...")
            raise WeightsUnavailableError(
                f"Could not load ImageNet weights for {spec.constructor} ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0][:160]}). Offline: copy the `*_notop.h5` file into "
                f"{keras_cache_dir()} or pass --weights PATH (or --weights none to train from scratch)."
            ) from exc
    else:
        encoder = ctor(weights=None, **kwargs)
        if weights is not None:
            try:
                encoder.load_weights(weights)
            except Exception as exc:
                raise ValueError(
                    f"Weights file {weights} does not fit a headless {spec.constructor} "
                    f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:160]})"
                ) from exc
    return _set_momentum(encoder, bn_momentum)


def _set_momentum(encoder, bn_momentum):
    if bn_momentum is not None:
        # The encoders are flat: every BatchNormalization sits directly in `encoder.layers`.
        for layer in encoder.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(bn_momentum)
    return encoder


def preprocess_layer(name):
    """Returns the `EncoderPreprocess` layer that the encoder `name` needs.

    Args:
        name: encoder name from `ENCODERS`.
    """
    spec = encoder_spec(name)
    return EncoderPreprocess(spec.preprocess, name=f"{str(name).lower()}_preprocess")


def encoder_features(name, encoder):
    """Returns [skip_1/2, skip_1/4, skip_1/8, skip_1/16, bottleneck_1/32] output tensors of `encoder`.

    Args:
        name: encoder name from `ENCODERS`.
        encoder: model built by `build_encoder`.
    """
    spec = encoder_spec(name)
    return [encoder.get_layer(layer).output for layer in (*spec.skips, spec.bottleneck)]
