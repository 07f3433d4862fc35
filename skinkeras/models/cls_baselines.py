"""Single-image classification baselines of Table 2: CNN encoders from the table and a ViT, on the original image."""

import keras
from keras import layers

from skinkeras.layers import EncoderPreprocess, PatchEmbedding, SelectToken, TransformerEncoderBlock
from skinkeras.models.contract import ORIGINAL, ExplanationTarget
from skinkeras.models.common import BN_MOMENTUM, image_size_pair
from skinkeras.models.encoders import normalize_weights
from skinkeras.models.layout import CHANNELS_LAST
from skinkeras.models.tdbn import DEFAULT_HEAD_UNITS, classification_head, classifier_model, encode_image, encoder_target

# Table 2 name -> encoder table name ("vit" is built here, not from keras.applications).
CLS_ARCHS = {
    "densenet201": "densenet201",
    "resnet50": "resnet50",
    "xception": "xception",
    "mobilenetv2": "mobilenetv2",
    "efficientnetb3": "efficientnetb3",
    "vit": None,
}
# ViT-B/16 (Dosovitskiy et al., 2021).
VIT_B16 = {"patch_size": 16, "dim": 768, "depth": 12, "num_heads": 12, "mlp_dim": 3072}


def cls_arch(name):
    """Returns the lower-case Table 2 name, or raises a ValueError that lists the valid ones.

    Args:
        name: baseline name, case-insensitive.
    """
    key = str(name).lower()
    if key not in CLS_ARCHS:
        raise ValueError(f"Unknown classification baseline {name!r}; valid: {', '.join(CLS_ARCHS)}")
    return key


def vit_features(image, size, patch_size, dim, depth, num_heads, mlp_dim, dropout):
    """0-255 RGB image -> ViT class-token features (B, dim); the layers are named `vit_*`.

    Args:
        image: image Input (0-255 RGB).
        size: (H, W), multiples of `patch_size`.
        patch_size: patch side.
        dim: token width.
        depth: encoder blocks.
        num_heads: attention heads.
        mlp_dim: MLP width of each block.
        dropout: dropout after the embedding and inside the blocks.
    """
    x = EncoderPreprocess("tf", name="vit_preprocess")(image)  # [-1, 1], as the original ViT
    x = PatchEmbedding(patch_size, dim, name="vit_patch_embedding")(x)
    x = layers.Dropout(dropout, name="vit_embedding_dropout")(x)
    for i in range(depth):
        x = TransformerEncoderBlock(num_heads, mlp_dim, dropout=dropout, name=f"vit_block{i}")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="vit_norm")(x)
    return SelectToken(0, name="vit_class_token")(x)


def vit_cam_layer(depth):
    """The ViT's Grad-CAM target: the patch tokens that enter the last block.

    Only the class token of the last block's output reaches the head, so that
    output's patch tokens get no gradient; the last block's input (the
    previous block's output, or the embedding for a one-block ViT) does.

    Args:
        depth: number of encoder blocks.
    """
    return f"vit_block{depth - 2}" if depth >= 2 else "vit_patch_embedding"


def build_cls_baseline(
    arch,
    num_classes,
    image_size=224,
    weights="imagenet",
    dropout=0.3,
    head_units=DEFAULT_HEAD_UNITS,
    vit_patch_size=VIT_B16["patch_size"],
    vit_dim=VIT_B16["dim"],
    vit_depth=VIT_B16["depth"],
    vit_heads=VIT_B16["num_heads"],
    vit_mlp_dim=VIT_B16["mlp_dim"],
    vit_dropout=0.1,
    bn_momentum=BN_MOMENTUM,
):
    """Builds a Table 2 baseline classifier on the original image (input `original`, 0-255 RGB).

    The paper gives no baseline details. CNNs: the headless `keras.applications`
    encoder (`original_encoder`, its own preprocessing inside the model),
    global average pooling, and the same head as TDBN (paper 5.6: Dense 512 and
    128, each BN-ReLU-Dropout, then softmax), so the baselines differ from TDBN
    only in what comes before the head, and the "densenet201" baseline is the
    "original_only" ablation of Table 3 (which reports the same accuracy for it
    as Table 2). ViT: a ViT-B/16 of our own (patch embedding with class token
    and learned position embeddings, pre-norm encoder blocks, final LayerNorm,
    class token), the same head; it has no pretrained weights here.

    Args:
        arch: one of CLS_ARCHS.
        num_classes: number of classes.
        image_size: int or (H, W) (Xception needs >= 71 px; ViT multiples of the patch size).
        weights: "imagenet", None/"none", or a path to weights of the headless encoder; ViT takes only None.
        dropout: dropout of the head blocks.
        head_units: hidden widths of the head (() for a plain linear classifier).
        vit_patch_size: ViT patch side.
        vit_dim: ViT token width.
        vit_depth: ViT encoder blocks.
        vit_heads: ViT attention heads.
        vit_mlp_dim: ViT MLP width.
        vit_dropout: ViT dropout.
        bn_momentum: momentum of every BatchNormalization layer, the encoder's included.

    Returns:
        A `SkinModel` {"original": (B, H, W, 3)} -> (B, num_classes) float32 probabilities; its contract
        names the pre-softmax scores and the Grad-CAM target (the encoder's output, or the last ViT block).
    """
    key = cls_arch(arch)
    size = image_size_pair(image_size)
    image = keras.Input((*size, 3), name=ORIGINAL)
    if key == "vit":
        try:
            chosen = normalize_weights(weights)
        except FileNotFoundError:
            chosen = weights
        if chosen is not None:
            raise ValueError(
                f"ViT weights are not available offline (got weights={weights!r}); "
                "the ViT baseline trains from scratch: use --weights none"
            )
        x = vit_features(image, size, vit_patch_size, vit_dim, vit_depth, vit_heads, vit_mlp_dim, vit_dropout)
        target = ExplanationTarget(ORIGINAL, vit_cam_layer(int(vit_depth)), ORIGINAL, tokens=True)
    else:
        fmap = encode_image(image, CLS_ARCHS[key], weights, size, ORIGINAL, bn_momentum)
        x = layers.GlobalAveragePooling2D(data_format=CHANNELS_LAST, name="gap")(fmap)
        target = encoder_target(ORIGINAL)
    outputs = classification_head(x, num_classes, head_units, dropout, bn_momentum)
    return classifier_model({ORIGINAL: image}, outputs, f"{key}_classifier", [target], key)
