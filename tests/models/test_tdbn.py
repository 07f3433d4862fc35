"""TDBN and its Table 3 ablations: inputs, outputs, wiring, masking, errors, .keras round trip; full size once (slow)."""

import keras
import numpy as np
import pytest

from skinkeras.layers import CrossAttentionBlock, MaskedAdditiveFusion, MetadataTransformer, TabularEmbedding
from skinkeras.models.tdbn import build_tdbn

pytestmark = pytest.mark.backend

NUM_FEATURES = 9  # age 1, sex 2, site 6
SMALL = dict(image_size=64, encoder="mobilenetv2", weights=None, num_features=NUM_FEATURES, projection_dim=16,
             head_units=(16, 8), num_heads=2, key_dim=8, ffn_dim=16, tabular_units=(8, 12), metadata_dim=8,
             metadata_heads=2)


def np_(x):
    return keras.ops.convert_to_numpy(x)


def images(seed, n=2, size=64):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype("float32")


def batch(n=2, seed=0):
    rng = np.random.default_rng(seed + 100)
    return {
        "original": images(seed, n),
        "segmented": images(seed + 1, n),
        "metadata": rng.normal(size=(n, NUM_FEATURES)).astype("float32"),
        "metadata_mask": np.array([[1], [0]] * (n // 2), "float32"),
    }


def calibrate(model, data):
    """Sets every BatchNorm's moving statistics to those of `data` (one training-mode pass, momentum 0).

    A freshly initialised network normalises with mean 0 / variance 1 in inference mode, which shrinks the
    untrained encoders' features towards zero (MobileNetV2's to ~1e-12); real statistics make the outputs
    depend visibly on the images, as they do in a trained model.
    """
    bns = [l for l in model._flatten_layers(include_self=False) if isinstance(l, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    model(data, training=True)
    for layer in bns:
        layer.momentum = 0.99


def predict(model, data):
    return np_(model({name: data[name] for name in model.input}, training=False))


def logits(model, data):
    """Pre-softmax scores: sensitivity checks on these do not vanish where the softmax saturates."""
    return predict(keras.Model(model.input, model.get_layer("logits").output), data)


@pytest.fixture(scope="module")
def tdbn():
    keras.utils.set_random_seed(0)
    model = build_tdbn(7, **SMALL)
    calibrate(model, batch(seed=50))
    return model


def test_outputs_are_probabilities(tdbn):
    out = predict(tdbn, batch())
    assert out.shape == (2, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert tdbn.get_layer("logits").output.shape == (None, 7)


def test_segmented_image_changes_prediction_and_nothing_else_does(tdbn):
    data = batch()
    out = logits(tdbn, data)
    np.testing.assert_array_equal(out, logits(tdbn, batch()))
    moved = dict(data, segmented=images(7))
    assert np.abs(logits(tdbn, moved) - out).max() > 1e-3


def test_metadata_only_counts_where_available(tdbn):
    data = batch()
    out = logits(tdbn, data)
    other = dict(data, metadata=data["metadata"] + 2.0)
    changed = logits(tdbn, other)
    available = data["metadata_mask"][:, 0] == 1
    np.testing.assert_allclose(changed[~available], out[~available], atol=1e-5)  # Eq. 8-9: no metadata, no effect
    assert np.abs(changed[available] - out[available]).max() > 1e-3


def test_structure_follows_the_paper(tdbn):
    assert set(tdbn.input) == {"original", "segmented", "metadata", "metadata_mask"}
    orig, seg = tdbn.get_layer("original_encoder"), tdbn.get_layer("segmented_encoder")
    assert orig is not seg
    assert not {id(v) for v in orig.weights} & {id(v) for v in seg.weights}  # distinct weights
    assert tdbn.get_layer("original_tokens").output.shape == (None, 4, 1280)  # 2x2 map -> 4 tokens
    assert isinstance(tdbn.get_layer("cross_attention"), CrossAttentionBlock)
    assert isinstance(tdbn.get_layer("tabular_embedding"), TabularEmbedding)
    assert isinstance(tdbn.get_layer("fusion"), MaskedAdditiveFusion)
    for name in ("vision_projection_dense", "tabular_projection_dense"):
        assert tdbn.get_layer(name).units == 16
    assert [tdbn.get_layer(f"head{i}_dense").units for i in (0, 1)] == [16, 8]
    assert tdbn.get_layer("original_preprocess").mode == "tf"  # MobileNetV2 scaling inside the model


VARIANT_INPUTS = {
    "tdbn_no_meta": {"original", "segmented"},
    "original_only": {"original"},
    "segmented_only": {"segmented"},
}


@pytest.mark.parametrize("variant", sorted(VARIANT_INPUTS))
def test_ablation_variants_have_only_their_inputs(variant):
    keras.utils.set_random_seed(1)
    model = build_tdbn(5, variant=variant, **SMALL)
    assert set(model.input) == VARIANT_INPUTS[variant]
    names = {layer.name for layer in model.layers}
    assert not names & {"tabular_embedding", "metadata_transformer", "fusion"}
    assert ("cross_attention" in names) == (variant == "tdbn_no_meta")
    out = predict(model, batch())
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("metadata_encoder", ["mlp", "transformer"])
def test_keras_roundtrip_equal_predictions(metadata_encoder, tdbn, tmp_path):
    if metadata_encoder == "mlp":
        model = tdbn
    else:
        keras.utils.set_random_seed(2)
        model = build_tdbn(7, metadata_encoder="transformer", **SMALL)
        calibrate(model, batch(seed=50))
        assert model.get_layer("metadata_transformer").group_sizes == (1, 2, 6)
        assert isinstance(model.get_layer("metadata_transformer"), MetadataTransformer)
    data = batch(seed=5)
    path = tmp_path / "tdbn.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert set(restored.input) == set(model.input)
    np.testing.assert_allclose(predict(restored, data), predict(model, data), atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="valid variants: tdbn, tdbn_no_meta, original_only, segmented_only"):
        build_tdbn(7, variant="dual", **SMALL)
    with pytest.raises(ValueError, match="valid: mlp, transformer"):
        build_tdbn(7, metadata_encoder="gru", **SMALL)
    with pytest.raises(ValueError, match="valid encoders: .*densenet201"):
        build_tdbn(7, **dict(SMALL, encoder="vgg16"))
    with pytest.raises(ValueError, match="needs num_features"):
        build_tdbn(7, **dict(SMALL, num_features=None))
    with pytest.raises(ValueError, match="must be positive and sum to num_features=9"):
        build_tdbn(7, metadata_encoder="transformer", metadata_groups=(1, 2, 3), **SMALL)


@pytest.mark.slow
def test_full_size_paper_model():
    model = build_tdbn(7, image_size=224, encoder="densenet201", weights=None, num_features=NUM_FEATURES)
    for branch in ("original", "segmented"):
        assert model.get_layer(f"{branch}_encoder").count_params() == 18_321_984  # DenseNet201 without top
        assert model.get_layer(f"{branch}_encoder").output.shape == (None, 7, 7, 1920)
        assert model.get_layer(f"{branch}_tokens").output.shape == (None, 49, 1920)
    assert model.get_layer("cross_attention").output.shape == (None, 49, 1920)
    assert model.get_layer("cross_attention").attention.key_dim == 240
    assert model.get_layer("token_pool").output.shape == (None, 1920)
    assert model.get_layer("vision_projection_dense").units == 1920
    assert model.get_layer("tabular_projection_dense").units == 1920
    assert [model.get_layer(f"head{i}_dense").units for i in (0, 1)] == [512, 128]
    data = {
        "original": images(0, 1, 224),
        "segmented": images(1, 1, 224),
        "metadata": np.zeros((1, NUM_FEATURES), "float32"),
        "metadata_mask": np.ones((1, 1), "float32"),
    }
    out = predict(model, data)
    assert out.shape == (1, 7)
    np.testing.assert_allclose(out.sum(), 1.0, atol=1e-5)
