"""Per-encoder input preprocessing, kept inside the model so it always takes 0-255 RGB."""

import keras
from keras import layers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
MODES = ("raw", "tf", "torch", "caffe")


@keras.saving.register_keras_serializable(package="skinkeras")
class EncoderPreprocess(layers.Layer):
    """Maps 0-255 RGB pixels to what a `keras.applications` encoder expects.

    Modes mirror `keras.applications.*.preprocess_input`: "raw" passes pixels
    through (EfficientNet rescales and normalises inside its own graph), "tf"
    scales to [-1, 1] (MobileNetV2, Xception), "torch" applies the ImageNet
    mean / std of the paper's section 4 (DenseNet), "caffe" flips to BGR and
    subtracts the ImageNet mean (ResNet50). Living in the model means a saved
    `.keras` file needs no outside preprocessing at inference.

    Args:
        mode: one of "raw", "tf", "torch", "caffe".
    """

    def __init__(self, mode="raw", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Unknown preprocessing mode {mode!r}; valid: {', '.join(MODES)}")
        self.mode = mode

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = keras.ops.convert_to_tensor(IMAGENET_MEAN, dtype=x.dtype)
            std = keras.ops.convert_to_tensor(IMAGENET_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            mean = keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=x.dtype)
            return keras.ops.flip(x, axis=-1) - mean
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
