"""Classifier layers (cross-attention, tabular, fusion, ViT): shapes, wiring, masking, config and .keras round trip."""

import keras
import numpy as np
import pytest

from skinkeras.layers import (
    CrossAttentionBlock,
    MaskedAdditiveFusion,
    MetadataTransformer,
    PatchEmbedding,
    SelectToken,
    TabularEmbedding,
    TransformerEncoderBlock,
)
from skinkeras.layers.fusion import availability_gate

pytestmark = pytest.mark.backend


def np_(x):
    return keras.ops.convert_to_numpy(x)


def normal(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def mask(*values):
    return np.array(values, "float32").reshape(-1, 1)


def bn_momenta(layer):
    """Momentum of every BatchNormalization inside `layer`, in walk order."""
    return [sub.momentum for sub in layer._flatten_layers() if isinstance(sub, keras.layers.BatchNormalization)]


CASES = [
    ("cross_attention", lambda: CrossAttentionBlock(num_heads=2, key_dim=4, ffn_dim=16),
     lambda: [normal((3, 4, 8), 0), normal((3, 4, 8), 1)], (3, 4, 8)),
    ("tabular", lambda: TabularEmbedding((8, 12), bn_momentum=0.9), lambda: [normal((3, 6), 0), mask(1, 0, 1)],
     (3, 12)),
    ("metadata_transformer", lambda: MetadataTransformer((1, 2, 3), dim=8, num_heads=2, num_layers=2),
     lambda: [normal((3, 6), 0), mask(1, 0, 1)], (3, 8)),
    ("fusion", lambda: MaskedAdditiveFusion(), lambda: [normal((3, 5), 0), normal((3, 5), 1), mask(1, 0, 1)], (3, 5)),
    ("patch_embedding", lambda: PatchEmbedding(4, 6), lambda: [normal((2, 8, 12, 3), 0)], (2, 7, 6)),
    ("encoder_block", lambda: TransformerEncoderBlock(2, 16, dropout=0.1), lambda: [normal((2, 5, 8), 0)], (2, 5, 8)),
    ("select_token", lambda: SelectToken(1), lambda: [normal((2, 5, 8), 0)], (2, 8)),
]
BN_COUNT = {"tabular": 2}  # BatchNormalization sublayers (built with bn_momentum=0.9); the other layers have none


@pytest.mark.parametrize("name,make,data,expected", CASES, ids=[c[0] for c in CASES])
def test_layer_shape_config_and_save(name, make, data, expected, tmp_path):
    keras.utils.set_random_seed(0)
    layer = make()
    data = data()
    inputs = [keras.Input(d.shape[1:]) for d in data]
    single = len(inputs) == 1
    output = layer(inputs[0] if single else inputs)
    assert tuple(output.shape[1:]) == expected[1:]
    shapes = [(None, *d.shape[1:]) for d in data]
    assert tuple(layer.compute_output_shape(shapes[0] if single else shapes))[1:] == expected[1:]
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    momenta = [0.9] * BN_COUNT.get(name, 0)
    assert bn_momenta(layer) == momenta and bn_momenta(clone) == momenta

    model = keras.Model(inputs[0] if single else inputs, output)
    feed = data[0] if single else data
    before = np_(model(feed, training=False))
    assert before.shape == expected
    path = tmp_path / "layer.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    after = np_(restored(feed, training=False))
    np.testing.assert_allclose(before, after, atol=1e-5)
    assert bn_momenta(restored.get_layer(layer.name)) == momenta


# --- cross-attention (paper 5.3) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cross():
    keras.utils.set_random_seed(3)
    block = CrossAttentionBlock(num_heads=2, key_dim=4, ffn_dim=16, dropout=0.1)
    block.build([(None, 5, 8), (None, 5, 8)])
    return block


def test_cross_attention_follows_the_segmented_tokens(cross):
    orig, seg = normal((2, 5, 8), 0), normal((2, 5, 8), 1)
    out = np_(cross([orig, seg], training=False))
    np.testing.assert_array_equal(out, np_(cross([orig, seg], training=False)))  # nothing changed: same output
    moved = np_(cross([orig, normal((2, 5, 8), 2)], training=False))
    assert np.abs(out - moved).max() > 1e-3  # only the segmented tokens changed


def test_cross_attention_is_query_value_original_key_segmented(cross):
    orig, seg = normal((2, 5, 8), 4), normal((2, 5, 8), 5)
    mha = cross.attention
    right = np_(cross.attend(orig, seg, training=False))
    np.testing.assert_allclose(right, np_(mha(query=orig, value=orig, key=seg, training=False)), atol=1e-6)
    # MultiHeadAttention's positional order is (query, value, key): mha(orig, seg, orig) means value=seg, key=orig.
    wrong = np_(mha(orig, seg, orig, training=False))
    assert np.abs(right - wrong).max() > 1e-3
    # Values are original tokens only: if every original token is the same vector, any attention weights over
    # the segmented keys mix identical values, so the segmented tokens cannot matter; with value=seg they would.
    flat = np.repeat(orig[:, :1], 5, axis=1)
    np.testing.assert_allclose(np_(cross([flat, seg], training=False)), np_(cross([flat, seg * -2.0], training=False)),
                               atol=1e-5)
    assert np.abs(np_(mha(flat, seg, flat, training=False)) - np_(mha(flat, -2.0 * seg, flat, training=False))).max() > 1e-3


def test_cross_attention_residual_norm_arrangement(cross):
    # Z = LN(orig + MHA(q=orig, k=seg, v=orig)); Z_hat = LN(Z + FFN(Z)) (Eq. 6), in inference mode.
    orig, seg = (keras.ops.convert_to_tensor(normal((2, 5, 8), seed)) for seed in (6, 7))
    z = cross.norm1(orig + cross.attend(orig, seg, training=False))
    expected = cross.norm2(z + cross.ffn_out(cross.ffn_in(z)))
    np.testing.assert_allclose(np_(cross([orig, seg], training=False)), np_(expected), atol=1e-5)
    _, scores = cross.attend(orig, seg, return_attention_scores=True)
    assert tuple(scores.shape) == (2, 2, 5, 5)


def test_cross_attention_default_key_dim_splits_width():
    block = CrossAttentionBlock()
    block.build([(None, 4, 32), (None, 4, 32)])
    assert (block.num_heads, block.attention.key_dim, block.ffn_dim) == (8, 4, 2048)
    with pytest.raises(ValueError, match="same width"):
        CrossAttentionBlock(2).build([(None, 4, 32), (None, 4, 16)])


# --- metadata (paper 5.4) and fusion (5.5) -------------------------------------------------------------------------


def test_tabular_embedding_is_eq7_times_availability():
    keras.utils.set_random_seed(4)
    layer = TabularEmbedding((8, 6))
    x, alpha = normal((4, 5), 0), mask(1, 0, 1, 0)
    out = np_(layer([x, alpha], training=False))
    assert np.all(out[[1, 3]] == 0.0)  # Eq. 8: exactly the zero vector without metadata
    assert np.abs(out[[0, 2]]).max() > 0
    # E = BN(ReLU(W2 BN(ReLU(W1 x)))), written out with the layer's own weights.
    ops = keras.ops
    hidden = layer.bn1(ops.relu(ops.matmul(x, layer.dense1.kernel) + layer.dense1.bias), training=False)
    expected = layer.bn2(ops.relu(ops.matmul(hidden, layer.dense2.kernel) + layer.dense2.bias), training=False)
    np.testing.assert_allclose(out[[0, 2]], np_(expected)[[0, 2]], atol=1e-5)
    # Batch statistics (training) do not leak into the masked rows either.
    assert np.all(np_(layer([x, alpha], training=True))[[1, 3]] == 0.0)


def test_tabular_embedding_bn_momentum_is_serialised_and_used():
    # Configs saved before `bn_momentum` existed lack the key: Keras' default 0.99, as before.
    config = TabularEmbedding((8, 6), bn_momentum=0.9).get_config()
    assert config["bn_momentum"] == 0.9
    del config["bn_momentum"]
    legacy = TabularEmbedding.from_config(config)
    assert legacy.bn_momentum == 0.99 and bn_momenta(legacy) == [0.99, 0.99]
    # One training step moves the moving mean by (1 - momentum) of the batch mean (it starts at 0).
    keras.utils.set_random_seed(7)
    layer = TabularEmbedding((8, 6), bn_momentum=0.9)
    x, alpha = normal((4, 5), 0), mask(1, 0, 1, 1)
    layer([x, alpha], training=True)
    ops = keras.ops
    hidden = np_(ops.relu(ops.matmul(x, layer.dense1.kernel) + layer.dense1.bias))
    np.testing.assert_allclose(np_(layer.bn1.moving_mean), 0.1 * hidden.mean(axis=0), atol=1e-5)


def test_metadata_transformer_masks_and_reads_every_group():
    keras.utils.set_random_seed(5)
    layer = MetadataTransformer((1, 2, 3), dim=8, num_heads=2, dropout=0.0)
    x, alpha = normal((3, 6), 0), mask(1, 1, 0)
    out = np_(layer([x, alpha], training=False))
    assert out.shape == (3, 8) and np.all(out[2] == 0.0) and np.abs(out[:2]).max() > 0
    for start, stop in ((0, 1), (1, 3), (3, 6)):  # age, sex, site each change the embedding
        other = x.copy()
        other[:, start:stop] += 1.5
        assert np.abs(np_(layer([other, alpha], training=False))[:2] - out[:2]).max() > 1e-4
    with pytest.raises(ValueError, match="sum to 6 but the metadata has 7"):
        MetadataTransformer((1, 2, 3))([keras.Input((7,)), keras.Input((1,))])


def test_fusion_adds_tabular_only_where_available():
    vision, tabular, alpha = normal((3, 4), 0), normal((3, 4), 1), mask(1, 0, 1)
    out = np_(MaskedAdditiveFusion()([vision, tabular, alpha]))
    np.testing.assert_array_equal(out[1], vision[1])
    np.testing.assert_allclose(out[[0, 2]], (vision + tabular)[[0, 2]], atol=1e-6)
    gate = availability_gate(np.array([1.0, 0.0, 1.0], "float32"), keras.ops.cast(vision, "float16"))
    assert tuple(gate.shape) == (3, 1) and keras.backend.standardize_dtype(gate.dtype) == "float16"
    np.testing.assert_array_equal(np_(gate), alpha)
    with pytest.raises(ValueError, match="equal widths"):
        MaskedAdditiveFusion()([keras.Input((4,)), keras.Input((3,)), keras.Input((1,))])


# --- ViT blocks (Table 2 baseline) --------------------------------------------------------------------------------


def test_patch_embedding_class_token_and_positions():
    keras.utils.set_random_seed(6)
    layer = PatchEmbedding(4, 6)
    images = normal((2, 8, 8, 3), 0)
    out = np_(layer(images))
    assert out.shape == (2, 5, 6)
    # Token 0 is the class token (+ its position embedding), the same for every image.
    np.testing.assert_allclose(out[0, 0], out[1, 0], atol=1e-6)
    np.testing.assert_allclose(out[0, 0], np_(layer.class_token + layer.position_embedding)[0, 0], atol=1e-6)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        PatchEmbedding(5, 6)(keras.Input((8, 8, 3)))
