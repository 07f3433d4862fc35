"""TDBN: dual DenseNet201 encoders, cross-attention, clinical metadata, additive fusion (paper 5, Table 3 ablations)."""

import keras
from keras import layers

from skinkeras.layers import (
    CrossAttentionBlock,
    EncoderPreprocess,
    MaskedAdditiveFusion,
    MetadataTransformer,
    TabularEmbedding,
)
from skinkeras.models.contract import (
    CLASSIFICATION,
    IMAGE_INPUTS,
    LOGITS,
    METADATA,
    METADATA_MASK,
    ORIGINAL,
    PROBABILITIES,
    SEGMENTED,
    Contract,
    ExplanationTarget,
    SkinModel,
)
from skinkeras.models.common import BN_MOMENTUM, image_size_pair
from skinkeras.models.encoders import build_encoder, encoder_spec
from skinkeras.models.layout import CHANNELS_FIRST, CHANNELS_LAST, data_format

VARIANTS = ("tdbn", "tdbn_no_meta", "original_only", "segmented_only")
METADATA_ENCODERS = ("mlp", "transformer")
DEFAULT_HEAD_UNITS = (512, 128)


def feature_layer(branch):
    """Name of the top-level layer that gives a branch's (B, h, w, C) stride-32 map.

    The nested `{branch}_encoder` itself, or under the channels_first format the transpose of its NCHW output
    back to channels-last, `{branch}_features` (`encode_image`).

    Args:
        branch: ORIGINAL or SEGMENTED.
    """
    return f"{branch}_features" if data_format() == CHANNELS_FIRST else f"{branch}_encoder"


def encoder_target(branch, keys_only=False):
    """The Grad-CAM target of an image branch: its stride-32 encoder map (`feature_layer`).

    Args:
        branch: ORIGINAL or SEGMENTED.
        keys_only: the branch reaches the score only as attention keys.
    """
    return ExplanationTarget(branch, feature_layer(branch), branch, keys_only=keys_only)


def classifier_model(inputs, outputs, name, targets, arch):
    """Wraps a classifier graph as a `SkinModel` with its contract.

    Args:
        inputs: dict input name -> Input.
        outputs: the probabilities tensor (from `classification_head`).
        name: model name.
        targets: its `ExplanationTarget`s.
        arch: registry name.
    """
    contract = Contract(CLASSIFICATION, tuple(inputs), PROBABILITIES, LOGITS, tuple(targets), arch=arch)
    return SkinModel(inputs, outputs, name=name, contract=contract)


def encode_image(inputs, encoder, weights, size, branch, bn_momentum=BN_MOMENTUM):
    """0-255 RGB `inputs` -> the branch's preprocessing -> its headless encoder -> (B, h, w, C) feature map.

    The encoder is a nested model named `{branch}_encoder` (its output is the
    stride-32 map, the Grad-CAM target); preprocessing is `{branch}_preprocess`.
    Under Keras' channels_first format the encoder runs on NCHW between two
    transposes, `{branch}_to_channels_first` and `{branch}_features`, so the
    map is channels-last either way (`skinkeras.models.layout`).

    Args:
        inputs: image Input (0-255 RGB).
        encoder: encoder table name.
        weights: "imagenet", None, or a path to weights of the headless encoder.
        size: (H, W).
        branch: "original" or "segmented".
        bn_momentum: momentum of the encoder's BatchNormalization layers.
    """
    spec = encoder_spec(encoder)
    model = build_encoder(encoder, (*size, 3), weights=weights, model_name=f"{branch}_encoder",
                          bn_momentum=bn_momentum)
    x = EncoderPreprocess(spec.preprocess, name=f"{branch}_preprocess")(inputs)
    if data_format() != CHANNELS_FIRST:
        return model(x)
    x = layers.Permute((3, 1, 2), name=f"{branch}_to_channels_first")(x)
    return layers.Permute((2, 3, 1), name=feature_layer(branch))(model(x))


def dense_bn_relu_dropout(x, units, dropout, name, bn_momentum=BN_MOMENTUM):
    """Dense -> BatchNorm -> ReLU -> Dropout, the block of the projections (5.5) and the head (5.6).

    Args:
        x: (B, D) tensor.
        units: Dense width.
        dropout: dropout rate.
        name: prefix of the four layer names.
        bn_momentum: BatchNormalization momentum.
    """
    x = layers.Dense(units, name=f"{name}_dense")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.Dropout(dropout, name=f"{name}_dropout")(x)


def classification_head(x, num_classes, head_units=DEFAULT_HEAD_UNITS, dropout=0.3, bn_momentum=BN_MOMENTUM):
    """Paper 5.6: Dense-BN-ReLU-Dropout blocks (512, 128), then Dense logits and a float32 softmax.

    Layers `head{i}_*`, `logits` (pre-softmax class scores) and `probabilities` (the output).

    Args:
        x: (B, D) fused features.
        num_classes: number of classes.
        head_units: widths of the hidden blocks.
        dropout: dropout rate of each block.
        bn_momentum: BatchNormalization momentum.
    """
    for i, units in enumerate(head_units):
        x = dense_bn_relu_dropout(x, int(units), dropout, f"head{i}", bn_momentum)
    x = layers.Dense(int(num_classes), name=LOGITS)(x)
    return layers.Activation("softmax", dtype="float32", name=PROBABILITIES)(x)


def build_tdbn(
    num_classes,
    image_size=224,
    encoder="densenet201",
    weights="imagenet",
    variant="tdbn",
    metadata_encoder="mlp",
    num_features=None,
    metadata_groups=None,
    num_heads=8,
    key_dim=None,
    ffn_dim=2048,
    attention_dropout=0.1,
    dropout=0.3,
    projection_dim=None,
    head_units=DEFAULT_HEAD_UNITS,
    tabular_units=(128, 256),
    metadata_dim=64,
    metadata_heads=4,
    metadata_layers=1,
    bn_momentum=BN_MOMENTUM,
):
    """Builds the Transformer Dual-Branch Network or one of its Table 3 ablations, taking 0-255 RGB images.

    Paper 5 / Figure 5, variant "tdbn": two encoders of the same architecture
    with separate weights, `original_encoder` on the dermoscopic image and
    `segmented_encoder` on the segmented lesion (Figure 2); each (B, h, w, C)
    feature map becomes h*w tokens of width C (49 x 1920 for DenseNet201 at
    224). `CrossAttentionBlock` (original = query and value, segmented = key,
    Eq. 5-6), a global average over tokens (C), a projection Dense-BN-ReLU-
    Dropout to `projection_dim`; the metadata goes through `TabularEmbedding`
    (Eq. 7-8, "mlp") or `MetadataTransformer` ("transformer") and its own
    projection; `MaskedAdditiveFusion` (Eq. 9); the 512 / 128 head (5.6).

    Ablations (Table 3): "tdbn_no_meta" is the same dual network without the
    metadata branch (vision projection -> head); "original_only" and
    "segmented_only" are one encoder on one image, global average pooling and
    the same head (no projection, no attention).

    Inputs (a dict; the model only has the inputs its variant uses):
    `original` (B, H, W, 3) and/or `segmented` (B, H, W, 3), 0-255 RGB;
    `metadata` (B, num_features) float (age scaled, sex one-hot, site one-hot,
    missing groups zero-filled) and `metadata_mask` (B, 1) in {0, 1}
    (1 = this sample has metadata) for "tdbn".
    Output: (B, num_classes) softmax probabilities (float32, layer
    `probabilities`); the pre-softmax scores are the `logits` layer.

    Args:
        num_classes: number of classes (7 for HAM10000, 8 for ISIC 2019).
        image_size: int or (H, W).
        encoder: encoder table name (DenseNet201 in the paper).
        weights: "imagenet", None, or a path to weights of the headless encoder (both encoders load it).
        variant: one of VARIANTS.
        metadata_encoder: "mlp" (Eq. 7) or "transformer" (Figure 5's wording).
        num_features: width F of the metadata vector (needed for "tdbn").
        metadata_groups: feature-group widths for the transformer; default (1, 2, F - 3) = age, sex, site.
        num_heads: cross-attention heads.
        key_dim: cross-attention key size per head; None = C // num_heads (PyTorch's convention).
        ffn_dim: hidden width of the cross-attention FFN.
        attention_dropout: dropout inside the cross-attention block and the metadata transformer.
        dropout: dropout of the projection and head blocks.
        projection_dim: common width of the projected modalities; None = encoder channels (1920 for DenseNet201).
        head_units: hidden widths of the classification head.
        tabular_units: the two widths of `TabularEmbedding`.
        metadata_dim: token width of `MetadataTransformer`.
        metadata_heads: heads of `MetadataTransformer`.
        metadata_layers: blocks of `MetadataTransformer`.
        bn_momentum: momentum of every BatchNormalization layer, the encoders' included.

    Returns:
        A `SkinModel` whose contract names its inputs, `logits` and the Grad-CAM targets (each encoder's
        output; in the dual variants the segmented branch is key-only).
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown TDBN variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    if metadata_encoder not in METADATA_ENCODERS:
        raise ValueError(
            f"Unknown metadata encoder {metadata_encoder!r}; valid: {', '.join(METADATA_ENCODERS)}"
        )
    encoder_spec(encoder)  # unknown names fail before anything is built
    size = image_size_pair(image_size)

    if variant in ("original_only", "segmented_only"):
        branch = variant.split("_")[0]
        image = keras.Input((*size, 3), name=branch)
        fmap = encode_image(image, encoder, weights, size, branch, bn_momentum)
        x = layers.GlobalAveragePooling2D(data_format=CHANNELS_LAST, name="gap")(fmap)
        outputs = classification_head(x, num_classes, head_units, dropout, bn_momentum)
        return classifier_model({branch: image}, outputs, f"{str(encoder).lower()}_{variant}",
                                [encoder_target(branch)], variant)

    inputs = {name: keras.Input((*size, 3), name=name) for name in IMAGE_INPUTS}
    tokens = {}
    for branch in IMAGE_INPUTS:
        fmap = encode_image(inputs[branch], encoder, weights, size, branch, bn_momentum)
        h, w, channels = (int(d) for d in fmap.shape[1:])
        tokens[branch] = layers.Reshape((h * w, channels), name=f"{branch}_tokens")(fmap)
    x = CrossAttentionBlock(num_heads, key_dim, ffn_dim, attention_dropout, name="cross_attention")(
        [tokens[ORIGINAL], tokens[SEGMENTED]]
    )
    x = layers.GlobalAveragePooling1D(data_format=CHANNELS_LAST, name="token_pool")(x)
    dim = int(projection_dim) if projection_dim else channels
    vision = dense_bn_relu_dropout(x, dim, dropout, "vision_projection", bn_momentum)
    # The segmented tokens are only the attention keys (Eq. 5-6): Grad-CAM weights vanish there.
    targets = [encoder_target(ORIGINAL), encoder_target(SEGMENTED, keys_only=True)]

    if variant == "tdbn_no_meta":
        outputs = classification_head(vision, num_classes, head_units, dropout, bn_momentum)
        return classifier_model(inputs, outputs, "tdbn_no_meta", targets, variant)

    if not num_features or int(num_features) < 1:
        raise ValueError("build_tdbn(variant='tdbn') needs num_features, the width of the metadata vector")
    num_features = int(num_features)
    inputs[METADATA] = keras.Input((num_features,), name=METADATA)
    inputs[METADATA_MASK] = keras.Input((1,), name=METADATA_MASK)
    if metadata_encoder == "mlp":
        tabular_layer = TabularEmbedding(tabular_units, bn_momentum=bn_momentum, name="tabular_embedding")
    else:
        groups = tuple(metadata_groups) if metadata_groups else (1, 2, num_features - 3)
        if min(groups) < 1 or sum(groups) != num_features:
            raise ValueError(
                f"metadata_groups {groups} must be positive and sum to num_features={num_features} "
                "(default layout: age 1, sex 2, site num_features - 3)"
            )
        tabular_layer = MetadataTransformer(
            groups, metadata_dim, metadata_heads, metadata_layers, dropout=attention_dropout,
            name="metadata_transformer",
        )
    tabular = tabular_layer([inputs[METADATA], inputs[METADATA_MASK]])
    tabular = dense_bn_relu_dropout(tabular, dim, dropout, "tabular_projection", bn_momentum)
    fused = MaskedAdditiveFusion(name="fusion")([vision, tabular, inputs[METADATA_MASK]])
    outputs = classification_head(fused, num_classes, head_units, dropout, bn_momentum)
    return classifier_model(inputs, outputs, "tdbn", targets, variant)
