"""The encoder table: names, skip layers, weights options and the offline ImageNet error."""

import keras
import numpy as np
import pytest

from skinkeras.models import encoders
from skinkeras.models.encoders import (
    ENCODERS,
    WeightsUnavailableError,
    build_encoder,
    encoder_features,
    encoder_spec,
    normalize_weights,
)


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ValueError) as info:
        encoder_spec("vgg16")
    assert all(name in str(info.value) for name in ENCODERS)


@pytest.mark.parametrize("name", ["efficientnetb0", "mobilenetv2", "densenet121", "resnet50"])
def test_skips_are_at_strides_2_to_32(name):
    encoder = build_encoder(name, (64, 64, 3))
    shapes = [tuple(t.shape[1:3]) for t in encoder_features(name, encoder)]
    assert shapes == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]


def test_weights_spellings(tmp_path):
    assert normalize_weights("none") is None and normalize_weights(None) is None
    assert normalize_weights("ImageNet") == "imagenet"
    with pytest.raises(FileNotFoundError, match="--weights imagenet\\|none\\|PATH"):
        normalize_weights(str(tmp_path / "missing.weights.h5"))


def test_weights_file_is_loaded(tmp_path):
    keras.utils.set_random_seed(1)
    source = build_encoder("mobilenetv2", (64, 64, 3))
    path = str(tmp_path / "encoder.weights.h5")
    source.save_weights(path)
    keras.utils.set_random_seed(2)
    loaded = build_encoder("mobilenetv2", (64, 64, 3), weights=path)
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # bn_momentum is applied after the weights are loaded and leaves them untouched.
    tuned = build_encoder("mobilenetv2", (64, 64, 3), weights=path, bn_momentum=0.9)
    assert set(bn_momenta(tuned)) == {0.9}
    for a, b in zip(source.weights, tuned.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    with pytest.raises(ValueError, match="does not fit a headless DenseNet121"):
        build_encoder("densenet121", (64, 64, 3), weights=path)


def bn_momenta(model):
    return [layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_bn_momentum_is_set_and_survives_save_load(tmp_path):
    default = bn_momenta(build_encoder("mobilenetv2", (32, 32, 3)))
    assert default and 0.9 not in default  # keras.applications' own value unless asked
    encoder = build_encoder("mobilenetv2", (32, 32, 3), bn_momentum=0.9)
    momenta = bn_momenta(encoder)
    assert len(momenta) == len(default) and set(momenta) == {0.9}
    path = tmp_path / "encoder.keras"
    keras.Model(encoder.input, encoder.output).save(path)
    restored = keras.models.load_model(path)
    assert bn_momenta(restored) == momenta


def test_offline_imagenet_error_names_the_way_out(monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        build_encoder("mobilenetv2", (64, 64, 3), weights="imagenet")
    message = str(info.value)
    assert "--weights PATH" in message and encoders.keras_cache_dir() in message and "\n" not in message
