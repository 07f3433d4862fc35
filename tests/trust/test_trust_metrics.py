"""Calibration, referral and subgroup metrics against hand computations and brute force (numpy only)."""

import numpy as np
import pandas as pd
import pytest

from skinkeras.intervals import classification_intervals
from skinkeras.trust.calibration import (
    calibration_errors,
    calibration_intervals,
    fit_temperature,
    reliability_bins,
    scale_temperature,
)
from skinkeras.trust.referral import (
    aurc,
    operating_point,
    parse_targets,
    risk_coverage,
    threshold_for_accuracy,
    view_spread,
)
from skinkeras.trust.subgroups import MISSING, age_band, archive_of, subgroup_labels, subgroup_table


def test_calibration_errors_equal_a_hand_computation():
    # Top-class confidences 0.9 (bin 14), 0.6 and 0.55 (bin 8), 0.3 (bin 4): 15 bins of width 1/15.
    probs = np.array([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.55, 0.25], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 1, 0])  # right, wrong, right, wrong
    # bin 14: conf 0.9 acc 1 -> gap 0.1; bin 8: conf (0.6 + 0.55) / 2 = 0.575, acc 0.5 -> 0.075;
    # bin 5 (0.333 < 0.4 <= 0.4): conf 0.4 acc 0 -> 0.4 (argmax of the last row is class 2, truth 0)
    errors = calibration_errors(labels, probs)
    assert errors["ece"] == pytest.approx((0.1 * 1 + 0.075 * 2 + 0.4 * 1) / 4)
    assert errors["mce"] == pytest.approx(0.4)
    brier = [(0.1**2 + 0.1**2), (0.6**2 + 0.7**2 + 0.1**2), (0.2**2 + 0.45**2 + 0.25**2), (0.7**2 + 0.3**2 + 0.4**2)]
    assert errors["brier"] == pytest.approx(np.mean(brier))
    assert errors["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.3, 0.55, 0.3])))
    table = reliability_bins(labels, probs)
    assert [n for n in table["count"] if n] == [1, 2, 1] and sum(table["count"]) == 4
    assert table["count"][13] == 1 and table["accuracy"][13] == 1.0 and table["confidence"][8] == pytest.approx(0.575)
    # A probability of exactly 0 on the truth is floored, not infinite.
    assert np.isfinite(calibration_errors([2], [[1.0, 0.0, 0.0]])["nll"])


def overconfident(n, seed, factor=3.0, classes=4):
    """Labels drawn from softmax(z), probabilities softmax(factor * z): over-confident by `factor`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, classes)) * 1.5
    true = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in true])
    sharp = np.exp(factor * z)
    return labels, sharp / sharp.sum(axis=1, keepdims=True)


def test_temperature_of_an_overconfident_model_is_about_its_factor_and_lowers_held_out_ece():
    labels, probs = overconfident(4000, seed=0)
    fit = fit_temperature(labels, probs)
    assert fit["temperature"] == pytest.approx(3.0, rel=0.1)
    assert fit["nll_calibrated"] < fit["nll_raw"]
    held_labels, held_probs = overconfident(4000, seed=1)
    raw = calibration_errors(held_labels, held_probs)["ece"]
    calibrated = calibration_errors(held_labels, scale_temperature(held_probs, fit["temperature"]))["ece"]
    assert calibrated < 0.5 * raw, (raw, calibrated)
    # Temperature never changes the decision.
    assert (scale_temperature(held_probs, 2.7).argmax(axis=1) == held_probs.argmax(axis=1)).all()
    # A calibrated model's temperature is about 1.
    assert fit_temperature(held_labels, scale_temperature(held_probs, 3.0))["temperature"] == pytest.approx(1, rel=0.1)


def test_calibration_intervals_cover_the_point_and_resample_lesions():
    labels, probs = overconfident(300, seed=2)
    lesions = np.repeat(np.arange(150), 2)
    found = calibration_intervals(labels, probs, lesions, n_resamples=200, seed=0)
    point = calibration_errors(labels, probs)
    for name in ("ece", "brier", "nll"):
        low, high = found[name]
        assert low <= point[name] <= high, name


def brute_force(labels, probs, score):
    """AURC and thresholds from the definition: each case's own score as the threshold."""
    pred = probs.argmax(axis=1)
    risks, sets = [], {}
    for s in score:
        kept = score >= s
        sets[s] = (kept.mean(), (pred[kept] == labels[kept]).mean())
        risks.append(1 - sets[s][1])
    return float(np.mean(risks)), sets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aurc_and_threshold_equal_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels, probs = overconfident(200, seed=seed)
    probs = np.round(probs, 1) + 1e-9 * rng.random(probs.shape)  # many equal confidences once rounded below
    score = np.round(probs.max(axis=1), 2)
    area, sets = brute_force(labels, probs, score)
    assert aurc(labels, probs, score) == pytest.approx(area, abs=1e-12)
    curve = risk_coverage(labels, probs, score)
    for threshold, coverage, accuracy in zip(curve["threshold"], curve["coverage"], curve["accuracy"]):
        assert (coverage, accuracy) == pytest.approx(sets[threshold])
    for target in (0.5, 0.8, 0.95):
        found = threshold_for_accuracy(labels, probs, target, score)
        best = [s for s, (cov, acc) in sets.items() if acc >= target]
        if not best:
            assert found["threshold"] is None
            continue
        expected = max(best, key=lambda s: sets[s][0])
        assert found["threshold"] == expected and found["coverage"] == pytest.approx(sets[expected][0])
        point = operating_point(labels, probs, found["threshold"], score)
        assert point["coverage"] == pytest.approx(sets[expected][0]) and point["accuracy"] >= target


def test_a_perfect_ranking_has_the_smallest_area_and_spread_ranks_disagreement():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6]])  # the third case is the one error
    assert aurc(labels, probs, np.array([4, 3, 1, 2])) == pytest.approx((0 + 0 + 0 + 1 / 4) / 4)
    assert aurc(labels, probs, np.array([1, 2, 4, 3])) > aurc(labels, probs, np.array([4, 3, 1, 2]))
    views = np.array([[[0.9, 0.1], [0.5, 0.5]], [[0.9, 0.1], [0.9, 0.1]]])
    assert view_spread(views) == pytest.approx([0.0, 0.2])
    assert parse_targets("0.9, 0.95") == (0.9, 0.95)
    for bad in ("x", "1.5", ""):
        with pytest.raises(ValueError, match="--refer-at"):
            parse_targets(bad)


def test_subgroup_labels_bands_sites_and_archives():
    records = pd.DataFrame({"sex": ["male", "", "female", None], "age": [12, 30, 69.9, np.nan],
                            "site": ["back", "face", "", "back"], "dx_type": ["histo", "consensus", "", "histo"],
                            "lesion_id": ["BCN_0000001", "MSK4_0000002", "HAM_0000003", "ISIC_0000004"]})
    found = subgroup_labels(records, "isic2019")
    assert list(found) == ["sex", "age", "site", "dx_type", "archive"]
    assert list(found["sex"]) == ["male", MISSING, "female", MISSING]
    assert list(found["age"]) == ["<30", "30-49", "50-69", MISSING]
    assert list(found["archive"]) == ["BCN", "MSK", "HAM", MISSING]
    assert "archive" not in subgroup_labels(records, "ham10000")
    unknown = pd.DataFrame({"sex": ["", None], "age": [np.nan, np.nan], "site": ["a", ""]})
    assert list(subgroup_labels(unknown)) == ["site"]  # families never filled in are left out
    assert age_band(70) == ">=70" and archive_of("MSK1_3") == "MSK"


def test_subgroup_rows_equal_cls_eval_scores_of_each_subset_alone(tmp_path):
    from skinkeras.classification.evaluate import write_scores

    from skinkeras.data.sets import dataset_classes

    labels, probs = overconfident(400, seed=3, classes=7)
    probs = np.round(probs, 8)  # as cls-eval writes and scores them
    classes = list(dataset_classes("ham10000"))
    lesions = np.array([f"L{i // 2}" for i in range(400)])
    rng = np.random.default_rng(0)
    records = pd.DataFrame({"sex": rng.choice(["male", "female"], 400), "age": rng.choice([20, 40, np.nan], 400)})
    families = subgroup_labels(records)
    table = subgroup_table(labels, probs, classes, lesions, families, min_size=100, n_resamples=200, seed=5,
                           melanoma=classes.index("mel"))
    assert table.iloc[0].family == "all" and table.iloc[0].images == 400
    for row in table.itertuples():
        if row.family == "all":
            continue
        rows = families[row.family] == row.group
        assert row.images == rows.sum() and row.lesions == len(set(lesions[rows]))
        if row.images < 100:
            assert row.status == "too small" and np.isnan(row.accuracy)
            continue
        out = tmp_path / f"{row.family}-{row.group}"
        out.mkdir()
        alone = write_scores(str(out), np.arange(rows.sum()).astype(str), labels[rows], lesions[rows], probs[rows],
                             classes, "ham10000", [1 / 7] * 7, bootstrap=200, seed=5)
        for score in ("accuracy", "balanced_accuracy", "auc_macro", "melanoma_auc"):
            assert getattr(row, score) == pytest.approx(alone[score], abs=1e-7), score
            low, high = alone["intervals"][score]
            assert (getattr(row, f"{score}_low"), getattr(row, f"{score}_high")) == pytest.approx((low, high),
                                                                                                  abs=1e-7)
        assert row.ece == pytest.approx(calibration_errors(labels[rows], probs[rows])["ece"], abs=1e-6)
        whole = table.iloc[0]
        flagged = [s for s in ("accuracy", "balanced_accuracy") if not getattr(row, f"{s}_low") <= whole[s]
                   <= getattr(row, f"{s}_high")]
        assert set(flagged) <= set(filter(None, row.flagged.split(", ")))


def test_a_group_that_is_worse_is_flagged():
    labels, probs = overconfident(600, seed=4, classes=3)
    group = np.where(np.arange(600) < 200, "bad", "good").astype(object)
    probs = probs.copy()
    probs[:200] = np.roll(probs[:200], 1, axis=1)  # the first group is always wrong where it was right
    table = subgroup_table(labels, probs, ["a", "b", "c"], np.arange(600).astype(str), {"site": group},
                           min_size=30, n_resamples=200)
    bad = table[table.group == "bad"].iloc[0]
    assert "accuracy" in bad.flagged and bad.accuracy_gap < 0
    # ECE is scored per group but never flags (it grows as a sample shrinks)
    assert table.ece.notna().all() and not table.flagged.str.contains("ece").any()
    whole = classification_intervals(labels, probs, ["a", "b", "c"], None, n_resamples=10)
    assert whole["accuracy"] is not None
