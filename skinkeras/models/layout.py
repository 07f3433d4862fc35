"""Image data format of the encoders: channels_last everywhere, or channels_first inside the CNN encoders.

Every model takes and returns channels-last tensors (the data pipeline's (B, H, W, 3) images, (B, h, w, C)
feature maps, Grad-CAM maps). Under `keras.config.image_data_format() == "channels_first"` the classifiers'
`keras.applications` encoders run in NCHW instead, between one transpose in and one out. That is the layout
PyTorch's convolutions use natively: with channels_last, Keras' torch backend transposes around every
convolution (34% of a DenseNet121 forward on a 2-core CPU went to `aten::copy_`, 12% channels_first; the full
TDBN at 224 px then infers 1.3x faster and trains as fast, RESULTS.md "Speed"). keras.applications refuses to
build a DenseNet under channels_first (its ImageNet files were once dimension-ordered), although in Keras 3 a
kernel has the same shape in both formats: the encoder is built channels-last, with its weights, and cloned.
"""

import contextlib

import keras

FORMATS = ("channels_last", "channels_first")
CHANNELS_LAST = "channels_last"
CHANNELS_FIRST = "channels_first"


def data_format():
    """The Keras image data format in force ("channels_last" or "channels_first")."""
    return keras.config.image_data_format()


def check_format(value):
    """Returns `value` if it is one of FORMATS, else raises a one-line ValueError naming them.

    Args:
        value: a data format name.
    """
    if value not in FORMATS:
        raise ValueError(f"unknown image data format {value!r}; valid: {', '.join(FORMATS)}")
    return value


@contextlib.contextmanager
def data_format_scope(value):
    """Sets Keras' image data format for the block (what the builders read), restoring it after.

    Args:
        value: "channels_last", "channels_first", or None for no change.
    """
    if value is None:
        yield
        return
    previous = data_format()
    keras.config.set_image_data_format(check_format(value))
    try:
        yield
    finally:
        keras.config.set_image_data_format(previous)


def require_channels_last(what):
    """Raises a one-line ValueError when the format in force is channels_first.

    Args:
        what: the model that has no channels_first path (its name in the message).
    """
    if data_format() == CHANNELS_FIRST:
        raise ValueError(f"{what} is built channels_last only (its decoder and blocks assume NHWC); "
                         "use --data-format channels_last (channels_first is for the classifiers' encoders)")


def runs_channels_first(model):
    """Whether any convolution or pooling layer of `model` (not of its nested models) computes in NCHW.

    Args:
        model: a Keras model.
    """
    return any(getattr(layer, "data_format", None) == CHANNELS_FIRST for layer in model.layers)


def _channels_first_layer(layer):
    """A copy of one layer of a channels-last CNN that computes the same function on NCHW tensors."""
    config = layer.get_config()
    if "data_format" in config:
        config["data_format"] = CHANNELS_FIRST
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Normalization, keras.layers.Concatenate)):
        axis = config["axis"]
        if axis in (3, -1, [3], [-1], (3,), (-1,)):
            config["axis"] = [1] if isinstance(axis, (list, tuple)) else 1
        elif axis is not None:
            raise ValueError(f"{layer.name}: cannot move axis {axis!r} of a channels-last map to channels_first")
    if isinstance(layer, keras.layers.Reshape):
        target = tuple(config["target_shape"])
        if len(target) != 3:
            raise ValueError(f"{layer.name}: cannot move the reshape to {target} to channels_first")
        config["target_shape"] = (target[2], target[0], target[1])  # squeeze-excitation's (1, 1, C)
    if isinstance(layer, keras.layers.Permute) or type(layer).__name__ == "Lambda":
        raise ValueError(f"{layer.name}: a {type(layer).__name__} has no known channels_first equivalent")
    return type(layer).from_config(config)


def channels_first_copy(model):
    """The same network (same weights, same layer names) on NCHW inputs and outputs.

    Args:
        model: a functional channels-last CNN with one (B, H, W, C) input (a `keras.applications` encoder).

    Returns:
        A functional model of input (B, C, H, W) and output (B, C', h, w), named like `model`.
    """
    h, w, c = model.input.shape[1:]
    first = model.layers[0]
    inputs = keras.Input((c, h, w), name=first.name if isinstance(first, keras.layers.InputLayer) else None)
    copy = keras.models.clone_model(model, input_tensors=inputs, clone_function=_channels_first_layer)
    # Keras 3 keeps a convolution kernel as (kh, kw, in, out) in both formats: the weights carry over as they are.
    copy.set_weights(model.get_weights())
    return copy
