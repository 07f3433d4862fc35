"""The trust block of `cls-eval`: calibration, referral, test-time augmentation and the subgroup audit.

Writes, next to the scores: reliability.png (raw and calibrated), risk_coverage.csv / .png and
subgroups.csv; returns the metrics.json entries ("calibration", "referral", "tta", "subgroups").
"""

import os

import numpy as np
import pandas as pd

from skinkeras.intervals import paired_difference
from skinkeras.metrics import classification_scores
from skinkeras.report.figures import plot_reliability, plot_risk_coverage
from skinkeras.trust.calibration import BINNING, calibration_errors, calibration_intervals, reliability_bins
from skinkeras.trust.referral import aurc, operating_point, risk_coverage, view_spread
from skinkeras.trust.subgroups import subgroup_labels, subgroup_table

RELIABILITY_PNG = "reliability.png"
RISK_COVERAGE_CSV = "risk_coverage.csv"
RISK_COVERAGE_PNG = "risk_coverage.png"
SUBGROUPS_CSV = "subgroups.csv"
MAX_PROBABILITY = "max_probability"
TTA_SPREAD = "tta_spread"


def restrict(labels, probs, present):
    """Labels and probabilities on the classes an external set has (renormalised, as `external_scores`).

    Args:
        labels: int labels in the model's classes.
        probs: (..., N, C) probabilities.
        present: sorted class indices kept.
    """
    sub = np.asarray(probs)[..., present]
    return np.searchsorted(present, labels), sub / np.clip(sub.sum(axis=-1, keepdims=True), 1e-12, None)


def _calibration(labels, raw, probs, classes, groups, applied, bootstrap, seed):
    block, tables = {}, {}
    for name, values in (("raw", raw), ("calibrated", probs)):
        if name == "calibrated" and not applied:
            continue
        errors = calibration_errors(labels, values)
        # The temperature keeps every decision; the rankings behind the AUCs can move a little.
        scores = classification_scores(labels, values, classes)
        errors["scores"] = {k: scores[k] for k in ("accuracy", "balanced_accuracy", "auc_macro")}
        if bootstrap:
            errors["intervals"] = calibration_intervals(labels, values, groups, bootstrap, seed)
        block[name] = errors
        tables[name] = {**reliability_bins(labels, values), "ece": errors["ece"]}
    return block, tables


def _view_scores(labels, probs, classes):
    scores = classification_scores(labels, probs, classes)
    errors = calibration_errors(labels, probs)
    return {**{k: scores[k] for k in ("accuracy", "balanced_accuracy", "auc_macro")},
            **{k: errors[k] for k in ("ece", "nll", "brier")}}


def trust_scores(out, labels, groups, classes, raw_views, found, records, dataset, tta, thresholds, source,
                 min_group=30, bootstrap=1000, seed=0, external=False, melanoma=None):
    """Scores how far the evaluated probabilities can be trusted, and writes the trust files into `out`.

    Args:
        out: the evaluation folder.
        labels: int labels (N,) in the model's classes.
        groups: lesion id per image.
        classes: the model's class names.
        raw_views: (V, N, C) raw probabilities of the test-time views (V = 1 without TTA).
        found: the `ClsRun` (its calibration applied when present).
        records: the scored images' records (sex, age, site, dx_type, lesion_id), N rows.
        dataset: the dataset the records come from (the archive family needs isic2019).
        tta: none | flip | flip-rotate.
        thresholds: referral thresholds chosen on validation (`referral_thresholds`).
        source: where the thresholds come from (one line).
        min_group: smallest scored subgroup.
        bootstrap: resamples by lesion (0: no intervals).
        seed: bootstrap seed.
        external: an external set, scored on the classes it has.
        melanoma: index of the melanoma class among `classes`, or None.

    Returns:
        {"calibration", "referral", "tta", "subgroups"} for metrics.json.
    """
    # Scored as written: predictions.csv holds 8 decimals, and every number here is computed from those.
    raw_views = np.asarray(raw_views, np.float64)
    raw = np.round(raw_views.mean(axis=0), 8)
    probs = np.round(found.calibrated(raw_views.mean(axis=0)), 8)  # what cls_eval scores (float64 mean)
    # Referral thresholds were chosen on the model's own classes: the score stays the full calibrated top class.
    confidence = probs.max(axis=1)
    view_probs = np.stack([found.calibrated(v) for v in raw_views])
    if external:
        present = sorted(set(int(c) for c in labels))
        s_labels, s_raw = restrict(labels, raw, present)
        s_probs, s_views = restrict(labels, probs, present)[1], restrict(labels, view_probs, present)[1]
        s_classes = [classes[c] for c in present]
        melanoma = present.index(melanoma) if melanoma in present else None
    else:
        s_labels, s_raw, s_probs, s_views, s_classes = labels, raw, probs, view_probs, list(classes)

    calibration, tables = _calibration(s_labels, s_raw, s_probs, s_classes, groups, found.calibration is not None,
                                       bootstrap, seed)
    calibration.update({"applied": found.calibration is not None, "note": found.calibration_note,
                        "temperature": found.temperature, "binning": BINNING,
                        "fitted_on": (found.calibration or {}).get("fitted_on")})
    if external:
        calibration["classes"] = "renormalised over the classes the set has: " + ", ".join(s_classes)
    plot_reliability(tables, os.path.join(out, RELIABILITY_PNG))

    curves = {MAX_PROBABILITY: risk_coverage(s_labels, s_probs, confidence)}
    areas = {MAX_PROBABILITY: aurc(s_labels, s_probs, confidence)}
    if len(raw_views) > 1:
        spread = -view_spread(view_probs)
        curves[TTA_SPREAD] = risk_coverage(s_labels, s_probs, spread)
        areas[TTA_SPREAD] = aurc(s_labels, s_probs, spread)
    pd.concat([pd.DataFrame({"score": name, **curve}) for name, curve in curves.items()]).to_csv(
        os.path.join(out, RISK_COVERAGE_CSV), index=False)
    points = [{**point, "here": operating_point(s_labels, s_probs, point["threshold"], confidence)}
              for point in thresholds]
    plot_risk_coverage(curves, [{"target": p["target"], **p["here"]} for p in points],
                       os.path.join(out, RISK_COVERAGE_PNG))
    referral = {"score": "calibrated maximum probability" if found.calibration else "maximum probability (raw)",
                "aurc": areas, "aurc_note": "mean risk (1 - accuracy) of the cases kept at each case's own score; "
                                            "lower is better", "threshold_source": source, "operating_points": points,
                "curve": RISK_COVERAGE_CSV}

    effect = {"mode": tta, "views": int(len(raw_views))}
    if len(raw_views) > 1:
        effect["single_view"] = _view_scores(s_labels, s_views[0], s_classes)
        effect["augmented"] = _view_scores(s_labels, s_probs, s_classes)
        if bootstrap:
            effect["balanced_accuracy_difference"] = paired_difference(
                s_labels, s_probs, s_views[0], s_classes, groups, metric="balanced_accuracy", n_resamples=bootstrap,
                seed=seed)

    families = subgroup_labels(records.reset_index(drop=True), dataset)
    table = subgroup_table(s_labels, s_probs, s_classes, groups, families, min_group, bootstrap, seed, melanoma)
    table.to_csv(os.path.join(out, SUBGROUPS_CSV), index=False, float_format="%.6f")
    flagged = table[(table.flagged != "") & (table.family != "all")]
    subgroups = {"file": SUBGROUPS_CSV, "min_size": int(min_group), "families": list(families),
                 "groups": int((table.family != "all").sum()),
                 "too_small": int((table.status != "scored").sum()),
                 "flagged": [f"{r.family}={r.group} ({r.flagged})" for r in flagged.itertuples()]}
    return {"calibration": calibration, "referral": referral, "tta": effect, "subgroups": subgroups}
