"""Bootstrap intervals: the percentile method against exact bootstrap distributions, cluster resampling,
metric equality with skinkeras.metrics / sklearn, determinism, paired differences and undefined resamples."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from skinkeras import intervals as iv
from skinkeras.metrics import SEG_METRICS, classification_scores

NAMES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def _probs_for(labels, correct, n_classes, rng):
    """Probabilities whose argmax is the label where `correct`, another class elsewhere."""
    probs = rng.uniform(0, 0.5, (len(labels), n_classes))
    wrong = (labels + 1 + rng.integers(0, n_classes - 1, len(labels))) % n_classes
    probs[np.arange(len(labels)), np.where(correct, labels, wrong)] = 1.0
    return probs


def _random_task(n, n_classes=7, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    # rounded so that scores tie, within and across classes
    probs = rng.dirichlet(np.ones(n_classes), n).round(1)
    return labels, probs


def _exact_quantile(values, probabilities, q):
    """Inverse CDF of a discrete distribution; also how far q lies from the nearest CDF step."""
    order = np.argsort(values)
    values, cdf = np.asarray(values)[order], np.cumsum(np.asarray(probabilities)[order])
    k = int(np.searchsorted(cdf, q))
    margin = min(abs(cdf[k] - q), abs(q - (cdf[k - 1] if k else 0.0)))
    return values[k], margin


# ----------------------------------------------------------------------------- the percentile method


def test_two_items_hand_computed_distribution_and_percentiles():
    labels = np.array([0, 0])
    probs = np.array([[0.9, 0.1], [0.1, 0.9]])  # the first right, the second wrong: accuracy values 1, 0
    resamples = iv.resample_indices(["a", "b"], 4000, seed=1)
    values = iv.accuracy(labels, probs, resamples)
    # exact bootstrap distribution of the mean of two draws: {0: 1/4, 0.5: 1/2, 1: 1/4}
    freq = {v: np.mean(values == v) for v in (0.0, 0.5, 1.0)}
    assert sum(freq.values()) == 1.0
    assert freq[0.0] == pytest.approx(0.25, abs=0.03)
    assert freq[0.5] == pytest.approx(0.5, abs=0.03)
    assert freq[1.0] == pytest.approx(0.25, abs=0.03)
    out = iv.classification_intervals(labels, probs, ["x", "y"], ["a", "b"], n_resamples=4000, seed=1)
    assert out["accuracy"] == [0.0, 1.0]
    # quantiles 0.3 and 0.7 sit inside the 0.5 atom (CDF jumps at 0.25 and 0.75), away from the steps
    narrow = iv.classification_intervals(labels, probs, ["x", "y"], ["a", "b"], n_resamples=4000, seed=1, level=0.4)
    assert narrow["accuracy"] == [0.5, 0.5]


@pytest.mark.parametrize("level", [0.95, 0.8, 0.4])
def test_four_items_match_the_exact_bootstrap_distribution(level):
    correct = np.array([1, 1, 1, 0], bool)
    labels = np.zeros(4, int)
    probs = np.where(correct[:, None], [[0.8, 0.2]], [[0.2, 0.8]])
    # every one of the 4**4 equally likely resamples
    means = [correct[list(draw)].mean() for draw in itertools.product(range(4), repeat=4)]
    atoms, counts = np.unique(means, return_counts=True)
    expected = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        value, margin = _exact_quantile(atoms, counts / counts.sum(), q)
        assert margin > 0.01  # far from a CDF step, so 20000 resamples land on the same atom
        expected.append(float(value))
    assert expected == {0.95: [0.25, 1.0], 0.8: [0.5, 1.0], 0.4: [0.75, 1.0]}[level]
    out = iv.classification_intervals(labels, probs, ["x", "y"], None, n_resamples=20000, seed=3, level=level)
    assert out["accuracy"] == expected
    # and the bootstrap frequencies approach the exact probabilities (Binomial(4, 3/4) / 4)
    values = iv.accuracy(labels, probs, iv.resample_indices(np.arange(4), 20000, seed=3))
    np.testing.assert_allclose([np.mean(values == a) for a in atoms], counts / 256, atol=0.01)


def test_percentile_interval_uses_numpy_quantiles_and_leaves_out_nan():
    values = np.array([3.0, np.nan, 1.0, 2.0, 4.0, np.nan, 5.0])
    interval, left_out = iv.percentile_interval(values, level=0.5)
    assert interval == [2.0, 4.0] and left_out == 2
    assert all(type(v) is float for v in interval)
    assert iv.percentile_interval([np.nan, np.nan]) == (None, 2)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        iv.percentile_interval(values, level=95)


# ----------------------------------------------------------------------------- grouping


def test_lesion_resampling_keeps_lesions_whole_and_widens_the_interval():
    rng = np.random.default_rng(0)
    # one lesion of 40 images, all right; 40 single-image lesions, half right
    n_big, n_single = 40, 40
    correct = np.concatenate([np.ones(n_big, bool), np.arange(n_single) % 2 == 0])
    labels = rng.integers(0, 3, n_big + n_single)
    probs = _probs_for(labels, correct, 3, rng)
    lesions = np.array(["big"] * n_big + [f"L{i}" for i in range(n_single)])
    images = np.array([f"I{i:02d}" for i in range(n_big + n_single)])  # sorted like 0..79

    for indices in iv.resample_indices(lesions, 200, seed=0):
        drawn = np.bincount(indices, minlength=len(lesions))
        assert np.all(drawn[:n_big] == drawn[0])  # the big lesion comes whole or not at all
        assert drawn[0] + drawn[n_big:].sum() == n_single + 1  # G = 41 lesions drawn, with replacement
    assert all(len(i) == len(images) for i in iv.resample_indices(images, 50, seed=0))

    by_lesion = iv.classification_intervals(labels, probs, ["a", "b", "c"], lesions, n_resamples=2000, seed=0)
    by_image = iv.classification_intervals(labels, probs, ["a", "b", "c"], images, n_resamples=2000, seed=0)
    width = {name: out["accuracy"][1] - out["accuracy"][0] for name, out in (("lesion", by_lesion),
                                                                             ("image", by_image))}
    assert width["lesion"] > 2 * width["image"]
    assert by_lesion["bootstrap"]["unit"] == "lesion" and by_lesion["bootstrap"]["groups"] == 41
    assert by_image["bootstrap"]["unit"] == "image" and by_image["bootstrap"]["groups"] == 80
    # image ids as groups resample exactly like no groups at all
    assert iv.classification_intervals(labels, probs, ["a", "b", "c"], None, n_resamples=2000, seed=0) == by_image


def test_row_order_does_not_change_the_resampled_lesions():
    labels, probs = _random_task(120, 4, seed=5)
    lesions = np.random.default_rng(5).integers(0, 50, 120)
    perm = np.random.default_rng(6).permutation(120)
    out = iv.classification_intervals(labels, probs, list("abcd"), lesions, n_resamples=300, seed=2)
    shuffled = iv.classification_intervals(labels[perm], probs[perm], list("abcd"), lesions[perm], n_resamples=300,
                                           seed=2)
    for name in iv.CLS_INTERVAL_METRICS:
        np.testing.assert_allclose(shuffled[name], out[name], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- metric definitions


def test_metrics_on_full_data_and_on_resamples_equal_classification_scores_and_sklearn():
    labels, probs = _random_task(300, seed=1)
    full = [np.arange(len(labels))]
    ref = classification_scores(labels, probs, NAMES)
    assert iv.accuracy(labels, probs, full)[0] == pytest.approx(ref["accuracy"], abs=1e-12)
    assert iv.balanced_accuracy(labels, probs, full)[0] == pytest.approx(ref["balanced_accuracy"], abs=1e-12)
    assert iv.auc_macro(labels, probs, full)[0] == pytest.approx(ref["auc_macro"], abs=1e-12)
    for c, name in enumerate(NAMES):
        sk = roc_auc_score(labels == c, probs[:, c])
        assert iv.class_auc(labels, probs, full, c)[0] == pytest.approx(sk, abs=1e-12)
        assert ref["per_class"][name]["auc"] == pytest.approx(sk, abs=1e-12)

    # a resample with duplicates and (with few lesions) missing classes scores like its rows copied out
    groups = np.random.default_rng(2).integers(0, 20, len(labels))
    for indices in iv.resample_indices(groups, 5, seed=4):
        sub = classification_scores(labels[indices], probs[indices], NAMES)
        for fn, key in ((iv.accuracy, "accuracy"), (iv.balanced_accuracy, "balanced_accuracy"),
                        (iv.auc_macro, "auc_macro")):
            assert fn(labels, probs, [indices])[0] == pytest.approx(sub[key], abs=1e-12)
        for c, name in enumerate(NAMES):
            expected = sub["per_class"][name]["auc"]
            got = iv.class_auc(labels, probs, [indices], c)[0]
            assert np.isnan(got) if expected is None else got == pytest.approx(expected, abs=1e-12)


def test_balanced_accuracy_ignores_classes_absent_from_the_resample():
    labels = np.array([0, 0, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 0]]  # class 0 recall 1/2, class 1 recall 1, class 2 recall 0
    assert iv.balanced_accuracy(labels, probs, [np.arange(4)])[0] == pytest.approx(0.5)
    # only class 0 and 1 present: (1/2 + 1) / 2; class 2 does not count as a zero
    assert iv.balanced_accuracy(labels, probs, [np.array([0, 1, 2, 2])])[0] == pytest.approx(0.75)


# ----------------------------------------------------------------------------- determinism and output shape


def test_same_seed_same_intervals_other_seed_others_and_json_floats():
    labels, probs = _random_task(200, seed=3)
    lesions = np.random.default_rng(3).integers(0, 120, 200)
    run = lambda seed: iv.classification_intervals(labels, probs, NAMES, lesions, n_resamples=200, seed=seed,
                                                   positive="MEL")
    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first["balanced_accuracy"] != other["balanced_accuracy"]
    assert set(first) == {"accuracy", "balanced_accuracy", "auc_macro", "MEL_auc", "bootstrap"}
    for name in ("accuracy", "balanced_accuracy", "auc_macro", "MEL_auc"):
        assert all(type(v) is float for v in first[name]) and first[name][0] < first[name][1]
    assert first["bootstrap"] == {"method": "percentile bootstrap", "unit": "lesion", "resamples": 200,
                                  "level": 0.95, "seed": 7, "groups": len(set(lesions)),
                                  "undefined": {"accuracy": 0, "balanced_accuracy": 0, "auc_macro": 0,
                                                "MEL_auc": 0}}
    assert json.loads(json.dumps(first)) == first
    np.testing.assert_array_equal(np.concatenate(iv.resample_indices(lesions, 3, 7)),
                                  np.concatenate(iv.resample_indices(lesions, 3, 7)))


def test_intervals_on_2000_images_of_7_classes_hold_the_point_estimates():
    labels, probs = _random_task(2000, seed=9)
    lesions = np.random.default_rng(9).integers(0, 1500, 2000)
    out = iv.classification_intervals(labels, probs, NAMES, lesions, n_resamples=1000, seed=0, positive="MEL")
    point = classification_scores(labels, probs, NAMES)
    assert out["balanced_accuracy"][0] < point["balanced_accuracy"] < out["balanced_accuracy"][1]
    assert out["MEL_auc"][0] < point["per_class"]["MEL"]["auc"] < out["MEL_auc"][1]


# ----------------------------------------------------------------------------- undefined resamples


def test_a_class_with_a_single_positive_counts_undefined_resamples():
    rng = np.random.default_rng(4)
    n = 30
    labels = np.concatenate([[0], rng.integers(1, 3, n - 1)])  # class 0 ("MEL") has one positive
    probs = rng.dirichlet(np.ones(3), n)
    out = iv.classification_intervals(labels, probs, ["MEL", "NV", "BCC"], None, n_resamples=2000, seed=0,
                                      positive="MEL")
    undefined = out["bootstrap"]["undefined"]
    # the positive is missed with probability (1 - 1/30)**30 ~ 0.362
    assert undefined["MEL_auc"] / 2000 == pytest.approx((1 - 1 / n) ** n, abs=0.04)
    assert undefined["auc_macro"] == 0 and undefined["accuracy"] == 0
    assert out["MEL_auc"] is not None and 0 <= out["MEL_auc"][0] <= out["MEL_auc"][1] <= 1
    values = iv.class_auc(labels, probs, iv.resample_indices(np.arange(n), 2000, seed=0), 0)
    assert int(np.isnan(values).sum()) == undefined["MEL_auc"]
    # a class with no positive at all: undefined everywhere, interval None
    absent = iv.classification_intervals(labels[1:], probs[1:], ["MEL", "NV", "BCC"], None, n_resamples=50,
                                         positive="MEL")
    assert absent["MEL_auc"] is None and absent["bootstrap"]["undefined"]["MEL_auc"] == 50


# ----------------------------------------------------------------------------- paired differences


def _paired_models(n=400, n_flipped=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n)
    correct = rng.random(n) < 0.8
    probs_a = _probs_for(labels, correct, 5, rng)
    flip = np.flatnonzero(correct)[:n_flipped]
    probs_b = probs_a.copy()
    probs_b[flip] = _probs_for(labels[flip], np.zeros(len(flip), bool), 5, rng)
    lesions = rng.integers(0, 300, n)
    return labels, probs_a, probs_b, lesions


def test_identical_models_differ_by_exactly_zero():
    labels, probs_a, _, lesions = _paired_models()
    out = iv.paired_difference(labels, probs_a, probs_a, NAMES[:5], lesions, n_resamples=300)
    assert out["difference"] == 0.0 and out["interval"] == [0.0, 0.0] and out["p_value"] == 1.0
    assert out["metric"] == "balanced_accuracy" and out["bootstrap"]["undefined"] == {"balanced_accuracy": 0}


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "auc_macro", "MEL_auc"])
def test_a_worse_model_b_gives_a_positive_difference_excluding_zero(metric):
    labels, probs_a, probs_b, lesions = _paired_models()
    out = iv.paired_difference(labels, probs_a, probs_b, NAMES[:5], lesions, metric=metric, n_resamples=1000)
    key, cls = (metric, None) if metric != "MEL_auc" else ("per_class", "MEL")
    score_a, score_b = classification_scores(labels, probs_a, NAMES[:5]), classification_scores(labels, probs_b,
                                                                                                  NAMES[:5])
    if cls:
        expected = score_a[key][cls]["auc"] - score_b[key][cls]["auc"]
    else:
        expected = score_a[key] - score_b[key]
    assert out["difference"] == pytest.approx(expected, abs=1e-12) and expected > 0
    assert 0 < out["interval"][0] < out["difference"] < out["interval"][1]
    assert out["p_value"] < 0.01
    if metric == "accuracy":
        assert out["difference"] == pytest.approx(40 / 400)


def test_paired_interval_is_narrower_than_the_unpaired_one():
    labels, probs_a, probs_b, lesions = _paired_models(n_flipped=10)
    paired = iv.paired_difference(labels, probs_a, probs_b, NAMES[:5], lesions, n_resamples=1000, seed=0)
    # unpaired: each model on its own, independent resamples
    alone_a = iv.balanced_accuracy(labels, probs_a, iv.resample_indices(lesions, 1000, seed=1))
    alone_b = iv.balanced_accuracy(labels, probs_b, iv.resample_indices(lesions, 1000, seed=2))
    unpaired, _ = iv.percentile_interval(alone_a - alone_b)
    assert unpaired[0] < 0 < unpaired[1]  # independent resampling cannot even tell the models apart
    assert paired["interval"][0] > 0
    assert paired["interval"][1] - paired["interval"][0] < 0.5 * (unpaired[1] - unpaired[0])


def test_p_value_definition():
    assert iv._p_value(0.1, np.array([0.2, 0.1, -0.1, 0.0])) == 1.0  # 2 * 2/4
    assert iv._p_value(0.1, np.array([0.2, 0.1, 0.3, -0.1])) == 0.5  # 2 * 1/4
    assert iv._p_value(-0.1, np.array([-0.2, -0.1, -0.3, 0.1, -0.3, -0.1, -0.1, -0.1])) == 0.25
    assert iv._p_value(0.0, np.array([0.2, 0.1])) == 1.0


def test_paired_difference_rejects_unknown_metrics():
    labels, probs_a, probs_b, lesions = _paired_models(n=40)
    with pytest.raises(ValueError, match="'top2' is not one of"):
        iv.paired_difference(labels, probs_a, probs_b, NAMES[:5], lesions, metric="top2", n_resamples=10)


# ----------------------------------------------------------------------------- segmentation


def _seg_frame(n=60, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    dice = np.clip(rng.beta(5, 2, n) + shift, 0, 1)
    frame = pd.DataFrame({"image_id": [f"ISIC_{i:07d}" for i in range(n)], "dice": dice, "jaccard": dice / (2 - dice)})
    frame["threshold_jaccard"] = np.where(frame["jaccard"] >= 0.65, frame["jaccard"], 0.0)
    for name in ("accuracy", "sensitivity", "specificity"):
        frame[name] = rng.uniform(0.7, 1.0, n)
    return frame


def test_segmentation_intervals_hold_the_mean_and_match_resampled_means():
    frame = _seg_frame()
    out = iv.segmentation_intervals(frame, n_resamples=500, seed=0)
    assert set(out) == {*SEG_METRICS, "bootstrap"}
    for name in SEG_METRICS:
        lo, hi = out[name]
        assert lo < frame[name].mean() < hi and type(lo) is float
    resamples = iv.resample_indices(frame["image_id"], 500, seed=0)
    means = iv.segmentation_means(frame, resamples)
    assert means["dice"][0] == pytest.approx(frame["dice"].to_numpy()[resamples[0]].mean(), abs=1e-12)
    np.testing.assert_allclose(out["dice"], iv.percentile_interval(means["dice"])[0], rtol=0, atol=1e-12)
    assert out["bootstrap"]["unit"] == "image" and out["bootstrap"]["groups"] == 60
    assert out["bootstrap"]["undefined"] == {name: 0 for name in SEG_METRICS}
    only_dice = iv.segmentation_intervals(frame, metrics=["dice"], n_resamples=500, seed=0)
    np.testing.assert_allclose(only_dice["dice"], out["dice"], rtol=0, atol=1e-12)
    assert set(only_dice) == {"dice", "bootstrap"}


def test_paired_seg_difference_joins_on_image_id():
    a = _seg_frame(seed=1)
    b = a.copy()
    b["dice"] = np.clip(a["dice"] - 0.05 * (np.arange(len(a)) % 3 == 0), 0, 1)
    shuffled_b = b.sample(frac=1.0, random_state=0)  # order must not matter: rows are joined by id
    out = iv.paired_seg_difference(a, shuffled_b, metric="dice", n_resamples=1000)
    assert out["difference"] == pytest.approx(a["dice"].mean() - b["dice"].mean(), abs=1e-12)
    assert 0 < out["interval"][0] < out["difference"] < out["interval"][1] and out["p_value"] < 0.01
    same = iv.paired_seg_difference(a, a, n_resamples=100)
    assert same["difference"] == 0.0 and same["interval"] == [0.0, 0.0] and same["p_value"] == 1.0


def test_paired_seg_difference_names_the_images_the_frames_do_not_share():
    a, b = _seg_frame(n=10), _seg_frame(n=10)
    b = b[b["image_id"] != "ISIC_0000003"]
    b = pd.concat([b, b.iloc[:1].assign(image_id="ISIC_0099999")])
    with pytest.raises(ValueError) as err:
        iv.paired_seg_difference(a, b, n_resamples=10)
    message = str(err.value)
    assert "\n" not in message
    assert "1 missing from A (ISIC_0099999)" in message and "1 missing from B (ISIC_0000003)" in message
    with pytest.raises(ValueError, match="lacks the metric column"):
        iv.segmentation_intervals(a.drop(columns="jaccard"))
