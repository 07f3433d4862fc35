"""Keras DiceCoefficient / JaccardIndex against the numpy ISIC metrics, on the active KERAS_BACKEND."""

import keras
import numpy as np
import pytest

from skinkeras.metrics import DiceCoefficient, JaccardIndex, seg_scores

pytestmark = pytest.mark.backend

METRICS = [(DiceCoefficient, "dice"), (JaccardIndex, "jaccard")]


def _batch(rng, n=6, h=24, w=32):
    """Probability maps around random ellipses, with empty-truth / empty-prediction / both-empty images."""
    yy, xx = np.mgrid[:h, :w]
    truth = np.zeros((n, h, w, 1), np.float32)
    for i in range(n):
        cy, cx, ry, rx = rng.uniform(6, 18), rng.uniform(8, 24), rng.uniform(3, 9), rng.uniform(4, 12)
        truth[i, ..., 0] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    pred = np.clip(truth * 0.7 + rng.uniform(-0.35, 0.45, truth.shape), 0, 1).astype(np.float32)
    truth[0] = 0  # empty truth, non-empty prediction
    pred[1] = rng.uniform(0, 0.49, pred[1].shape)  # empty prediction on a lesion
    truth[2], pred[2] = 0, 0.1  # both empty: scores 1
    return truth, pred


def _numpy_scores(truth, pred, key, threshold=0.5):
    return np.array([seg_scores(t[..., 0] > 0.5, p[..., 0] > threshold)[key] for t, p in zip(truth, pred)])


@pytest.mark.parametrize("cls, key", METRICS)
def test_matches_numpy_over_batches(cls, key):
    rng = np.random.default_rng(0)
    metric = cls()
    seen = []
    for _ in range(3):
        truth, pred = _batch(rng)
        metric.update_state(truth, pred)
        seen.append(_numpy_scores(truth, pred, key))
    expected = np.concatenate(seen)
    assert {0.0, 1.0} <= set(expected)  # the edge cases really occur
    np.testing.assert_allclose(float(metric.result()), expected.mean(), atol=1e-5)


@pytest.mark.parametrize("cls, key", METRICS)
def test_threshold_is_strict_and_configurable(cls, key):
    rng = np.random.default_rng(1)
    truth, pred = _batch(rng)
    metric = cls(threshold=0.3)
    metric.update_state(truth, pred)
    np.testing.assert_allclose(float(metric.result()), _numpy_scores(truth, pred, key, 0.3).mean(), atol=1e-5)
    at_threshold = cls()
    at_threshold.update_state(np.ones((1, 4, 4, 1), np.float32), np.full((1, 4, 4, 1), 0.5, np.float32))
    assert float(at_threshold.result()) == 0.0  # 0.5 is not > 0.5: empty prediction


@pytest.mark.parametrize("cls, key", METRICS)
def test_sample_weight_per_image(cls, key):
    rng = np.random.default_rng(2)
    truth, pred = _batch(rng)
    weights = rng.uniform(0.1, 2.0, len(truth)).astype(np.float32)
    metric = cls()
    metric.update_state(truth, pred, sample_weight=weights)
    expected = np.average(_numpy_scores(truth, pred, key), weights=weights)
    np.testing.assert_allclose(float(metric.result()), expected, atol=1e-5)


@pytest.mark.parametrize("cls, key", METRICS)
def test_reset_state(cls, key):
    rng = np.random.default_rng(3)
    metric = cls()
    assert float(metric.result()) == 0.0  # nothing seen yet
    metric.update_state(*_batch(rng))
    metric.reset_state()
    assert float(metric.result()) == 0.0
    truth, pred = _batch(rng)
    metric.update_state(truth, pred)
    np.testing.assert_allclose(float(metric.result()), _numpy_scores(truth, pred, key).mean(), atol=1e-5)


@pytest.mark.parametrize("cls, key", METRICS)
def test_config_round_trip(cls, key):
    metric = cls(threshold=0.4, name=f"my_{key}")
    config = metric.get_config()
    assert config["threshold"] == 0.4 and config["name"] == f"my_{key}"
    clone = cls.from_config(config)
    assert (clone.threshold, clone.name) == (0.4, f"my_{key}")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(restored) is cls and restored.get_config() == config
    assert cls().name == key


def test_compiled_evaluate_matches_numpy():
    """Inside model.evaluate (jit/graph on every backend) the metrics still give the numpy mean."""
    rng = np.random.default_rng(4)
    truth, pred = _batch(rng, n=8)
    inputs = keras.Input(pred.shape[1:])
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(loss="mse", metrics=[DiceCoefficient(), JaccardIndex()])
    got = model.evaluate(pred, truth, batch_size=3, verbose=0, return_dict=True)
    for key in ("dice", "jaccard"):
        np.testing.assert_allclose(got[key], _numpy_scores(truth, pred, key).mean(), atol=1e-5)
