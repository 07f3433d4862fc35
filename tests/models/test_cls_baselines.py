"""Table 2 baselines: every architecture builds and predicts, ViT options and errors, Xception feature strides."""

import keras
import numpy as np
import pytest

from skinkeras.layers import PatchEmbedding, TransformerEncoderBlock
from skinkeras.models.cls_baselines import CLS_ARCHS, build_cls_baseline
from skinkeras.models.encoders import build_encoder, encoder_features

pytestmark = pytest.mark.backend

TINY_VIT = dict(vit_patch_size=16, vit_dim=16, vit_depth=2, vit_heads=2, vit_mlp_dim=32)
# Building DenseNet201 / EfficientNetB3 graphs and running them op by op takes 90-105 s each under JAX (seconds
# elsewhere); the builder has no backend-specific code and the same builder runs the four lighter encoders under
# JAX, so these two run on TensorFlow and torch (the full-size model tests run on one backend, see conftest.py).
HEAVY = {"densenet201", "efficientnetb3"} if keras.backend.backend() == "jax" else set()


def images(n=2, size=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype("float32")


@pytest.mark.parametrize(
    "arch", [pytest.param(a, marks=pytest.mark.skip(reason="90-105 s to build under JAX; run on TensorFlow and torch"))
             if a in HEAVY else a for a in CLS_ARCHS]
)
def test_baseline_builds_and_predicts(arch):
    keras.utils.set_random_seed(0)
    size = 96 if arch == "xception" else 64  # Xception needs >= 71 px
    model = build_cls_baseline(arch, 7, image_size=size, weights=None, head_units=(16,), **TINY_VIT)
    assert list(model.input) == ["original"]
    out = keras.ops.convert_to_numpy(model({"original": images(size=size)}, training=False))
    assert out.shape == (2, 7)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert model.get_layer("logits").units == 7
    if arch != "vit":
        assert model.get_layer("original_encoder").output.shape[1:3] == (size // 32, size // 32)


def test_default_head_is_the_tdbn_head():
    model = build_cls_baseline("mobilenetv2", 7, image_size=64, weights=None)
    assert [model.get_layer(f"head{i}_dense").units for i in (0, 1)] == [512, 128]
    assert model.get_layer("original_preprocess").mode == "tf"


def test_vit_structure_and_roundtrip(tmp_path):
    keras.utils.set_random_seed(1)
    model = build_cls_baseline("vit", 3, image_size=32, weights="none", head_units=(), vit_patch_size=8,
                               vit_dim=8, vit_depth=2, vit_heads=2, vit_mlp_dim=16)
    assert model.get_layer("vit_patch_embedding").output.shape == (None, 17, 8)  # 4x4 patches + class token
    blocks = [layer for layer in model.layers if isinstance(layer, TransformerEncoderBlock)]
    assert len(blocks) == 2 and isinstance(model.get_layer("vit_patch_embedding"), PatchEmbedding)
    x = {"original": images(size=32)}
    before = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "vit.keras"
    model.save(path)
    after = keras.ops.convert_to_numpy(keras.models.load_model(path)(x, training=False))
    np.testing.assert_allclose(before, after, atol=1e-5)


def test_vit_defaults_are_vit_b16():
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(build_cls_baseline).parameters.items()}
    assert (defaults["vit_patch_size"], defaults["vit_dim"], defaults["vit_depth"], defaults["vit_heads"],
            defaults["vit_mlp_dim"]) == (16, 768, 12, 12, 3072)


def test_errors_are_named():
    with pytest.raises(ValueError) as info:
        build_cls_baseline("vgg16", 7, weights=None)
    assert all(name in str(info.value) for name in CLS_ARCHS)
    with pytest.raises(ValueError, match="ViT weights are not available offline"):
        build_cls_baseline("vit", 7, image_size=32, weights="imagenet", **TINY_VIT)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        build_cls_baseline("vit", 7, image_size=40, weights=None, **TINY_VIT)


def test_xception_feature_maps():
    # Valid-padded stem: 109/55/28/14/7 at 224 (strides ~2, 4, 8, 16 and exactly 32 at the bottleneck).
    encoder = build_encoder("xception", (224, 224, 3))
    shapes = [tuple(t.shape[1:3]) for t in encoder_features("xception", encoder)]
    assert shapes == [(109, 109), (55, 55), (28, 28), (14, 14), (7, 7)]
    assert encoder.output.shape[1:] == (7, 7, 2048)
