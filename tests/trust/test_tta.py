"""Test-time augmentation through each backend's predict: views, invariance, and their spread."""

import keras
import numpy as np
import pytest

from skinkeras.data.pipeline import TTA_VIEWS, orient
from skinkeras.inference import predict_views
from skinkeras.models.contract import CLASSIFICATION, ORIGINAL, PROBABILITIES, Contract, SkinModel
from skinkeras.trust.referral import view_spread

pytestmark = pytest.mark.backend


def classifier(invariant, size=16, classes=3):
    """Mean-pooled pixels (blind to any flip or turn) or flattened pixels (sees them) -> softmax."""
    image = keras.Input((size, size, 3), name=ORIGINAL)
    x = keras.layers.Rescaling(1 / 255)(image)
    x = keras.layers.GlobalAveragePooling2D()(x) if invariant else keras.layers.Flatten()(x)
    x = keras.layers.Dense(classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=1))(x)
    probs = keras.layers.Softmax(name=PROBABILITIES)(x)
    return SkinModel({ORIGINAL: image}, probs, contract=Contract(CLASSIFICATION, (ORIGINAL,), PROBABILITIES))


def test_views_are_the_eight_symmetries_of_the_square():
    image = np.arange(4 * 4 * 3).reshape(1, 4, 4, 3)
    seen = {orient(image, *view).tobytes() for view in TTA_VIEWS["flip-rotate"]}
    assert len(seen) == 8 and len(TTA_VIEWS["flip"]) == 3 and TTA_VIEWS["none"] == ((0, False),)
    np.testing.assert_array_equal(orient(image, 2, True), image[:, ::-1])  # the vertical mirror
    with pytest.raises(ValueError, match="square"):
        orient(np.zeros((1, 4, 6, 3)), 1)


def test_tta_of_an_invariant_model_changes_nothing_and_of_another_it_does():
    rng = np.random.default_rng(0)
    arrays = {ORIGINAL: rng.integers(0, 256, (6, 16, 16, 3)).astype(np.uint8)}
    labels, rows = np.zeros(6, np.int64), np.arange(6)
    for tta in ("flip", "flip-rotate"):
        views = predict_views(classifier(True), arrays, labels, rows, 4, tta)
        assert views.shape == (len(TTA_VIEWS[tta]), 6, 3)
        np.testing.assert_allclose(views, np.broadcast_to(views[0], views.shape), atol=1e-5)
        assert view_spread(views).max() < 1e-5
    model = classifier(False)
    views = predict_views(model, arrays, labels, rows, 4, "flip-rotate")
    assert np.abs(views - views[0]).max() > 1e-2 and view_spread(views).max() > 1e-3
    # each view is the model on the turned and mirrored images
    for view, (turns, flip) in zip(views, TTA_VIEWS["flip-rotate"]):
        direct = model.predict({ORIGINAL: orient(arrays[ORIGINAL], turns, flip).astype("float32")}, verbose=0)
        np.testing.assert_allclose(view, direct, atol=1e-5)
    with pytest.raises(ValueError, match="--tta"):
        predict_views(model, arrays, labels, rows, 4, "mirror")
