"""Subgroup audit: every headline score per group of patients, with lesion-bootstrap intervals and flags.

Groups (when the records carry the column): sex, age band, anatomical site, how the diagnosis was confirmed
(HAM10000's `dx_type`) and the contributing archive (the prefix of ISIC 2019's `lesion_id`). A group smaller
than the minimum is listed as too small instead of scored: its interval would say nothing. A group is flagged
when its interval of a score excludes the whole set's value of that score (ECE excepted: see `FLAGGED_BY`).
"""

import re

import numpy as np
import pandas as pd

MISSING = "missing"
AGE_BANDS = ((0, 30, "<30"), (30, 50, "30-49"), (50, 70, "50-69"), (70, np.inf, ">=70"))
FAMILIES = ("sex", "age", "site", "dx_type", "archive")
MIN_GROUP = 30
SCORES = ("accuracy", "balanced_accuracy", "auc_macro", "melanoma_auc", "ece")
# ECE is shown but never flags: binned ECE grows as the sample shrinks (each bin's accuracy is noisier), so every
# smaller group's ECE interval sits above the whole set's even when the model is calibrated alike (measured on
# HAM10000: 16 of 16 scored groups would be flagged, the temperature-1.05 model included).
FLAGGED_BY = ("accuracy", "balanced_accuracy", "auc_macro", "melanoma_auc")
SMALL = "too small"
_ARCHIVE = re.compile(r"^([A-Za-z]+)\d*_")


def age_band(age):
    """`<30`, `30-49`, `50-69`, `>=70`, or `missing` (NaN / None)."""
    if age is None or not np.isfinite(float(age)):
        return MISSING
    return next(name for low, high, name in AGE_BANDS if low <= float(age) < high)


def archive_of(lesion_id):
    """The contributing archive of an ISIC 2019 lesion id (`BCN_0000019` -> BCN, `MSK4_...` -> MSK)."""
    found = _ARCHIVE.match(str(lesion_id))
    return found.group(1).upper() if found and found.group(1).upper() != "ISIC" else MISSING


def subgroup_labels(records, dataset=None):
    """The group of every record in each family the records can say something about.

    Args:
        records: data frame with (some of) `sex`, `age`, `site`, `dx_type`, `lesion_id`.
        dataset: "isic2019" adds the archive family (its lesion ids carry the archive).

    Returns:
        {family: array of group names}, in `FAMILIES` order; a family whose column is absent, or missing for
        every record, is left out.
    """
    def text(column):
        values = records[column].fillna("").astype(str).str.strip()
        return np.where(values == "", MISSING, values)

    out = {}
    if "sex" in records:
        out["sex"] = text("sex")
    if "age" in records:
        out["age"] = np.array([age_band(a) for a in pd.to_numeric(records["age"], errors="coerce")], dtype=object)
    if "site" in records:
        out["site"] = text("site")
    if "dx_type" in records and (records["dx_type"].fillna("").astype(str).str.strip() != "").any():
        out["dx_type"] = text("dx_type")
    if dataset == "isic2019" and "lesion_id" in records:
        out["archive"] = np.array([archive_of(v) for v in records["lesion_id"]], dtype=object)
    # A family the records never fill (every value missing) says nothing about anyone: left out.
    return {k: np.asarray(v, dtype=object) for k, v in out.items() if set(v) - {MISSING}}


def group_scores(labels, probs, classes, lesions, n_resamples=1000, seed=0, melanoma=None):
    """The audited scores of one set of images with their lesion-bootstrap intervals.

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities.
        classes: class names.
        lesions: lesion id of each image.
        n_resamples: bootstrap resamples (0: no intervals).
        seed: bootstrap seed.
        melanoma: index of the melanoma class, or None.

    Returns:
        {score: value}, {score: [low, high] or None}.
    """
    from sklearn.metrics import roc_auc_score

    from skinkeras.intervals import classification_intervals
    from skinkeras.metrics import classification_scores
    from skinkeras.trust.calibration import calibration_errors, calibration_intervals

    scores = classification_scores(labels, probs, classes)
    values = {k: scores[k] for k in ("accuracy", "balanced_accuracy", "auc_macro")}
    truth = None if melanoma is None else labels == melanoma
    values["melanoma_auc"] = (float(roc_auc_score(truth, probs[:, melanoma]))
                              if truth is not None and 0 < truth.sum() < len(truth) else None)
    values["ece"] = calibration_errors(labels, probs)["ece"]
    intervals = {k: None for k in SCORES}
    if n_resamples:
        positive = classes[melanoma] if melanoma is not None else None
        found = classification_intervals(labels, probs, list(classes), lesions, n_resamples, seed, positive=positive)
        intervals.update({k: found.get(k) for k in ("accuracy", "balanced_accuracy", "auc_macro")})
        if positive is not None and values["melanoma_auc"] is not None:
            intervals["melanoma_auc"] = found.get(f"{positive}_auc")
        intervals["ece"] = calibration_intervals(labels, probs, lesions, n_resamples, seed)["ece"]
    return values, intervals


def subgroup_table(labels, probs, classes, lesions, families, min_size=MIN_GROUP, n_resamples=1000, seed=0,
                   melanoma=None):
    """One row per (family, group): size, scores with intervals, gaps to the whole set, flags.

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities (the ones the evaluation scores: calibrated when it applies calibration).
        classes: class names.
        lesions: lesion id of each image (the bootstrap unit).
        families: {family: (N,) group names} from `subgroup_labels`.
        min_size: groups with fewer images are listed as too small, not scored.
        n_resamples: bootstrap resamples per group (0: no intervals, nothing flagged).
        seed: bootstrap seed.
        melanoma: index of the melanoma class, or None.

    Returns:
        data frame: family, group, images, lesions, status ("scored" / "too small"), for each score its value,
        `_low`, `_high` and `_gap` (group minus whole set), and `flagged` (the scores of `FLAGGED_BY` whose
        interval excludes the whole set's value, comma-separated; empty when none). The first row is the whole set (family "all").
    """
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    lesions = np.asarray(lesions).astype(str)
    overall, overall_iv = group_scores(labels, probs, classes, lesions, n_resamples, seed, melanoma)
    rows = [_row("all", "all", labels, lesions, "scored", overall, overall_iv, overall)]
    for family, names in families.items():
        names = np.asarray(names, dtype=object)
        for group in sorted(set(names), key=_group_order):
            rows_in = names == group
            if rows_in.sum() < min_size:
                rows.append(_row(family, group, labels[rows_in], lesions[rows_in], SMALL, {}, {}, overall))
                continue
            values, iv = group_scores(labels[rows_in], probs[rows_in], classes, lesions[rows_in], n_resamples, seed,
                                      melanoma)
            rows.append(_row(family, group, labels[rows_in], lesions[rows_in], "scored", values, iv, overall))
    return pd.DataFrame(rows)


def _group_order(group):
    """Age bands in age order, other groups by name, `missing` last."""
    bands = [name for _, _, name in AGE_BANDS]
    return (group == MISSING, bands.index(group) if group in bands else len(bands), str(group))


def _row(family, group, labels, lesions, status, values, intervals, overall):
    row = {"family": family, "group": group, "images": int(len(labels)), "lesions": int(len(set(lesions))),
           "status": status}
    flagged = []
    for score in SCORES:
        value, iv, whole = values.get(score), intervals.get(score), overall.get(score)
        row[score] = value
        row[f"{score}_low"], row[f"{score}_high"] = (iv or (None, None))
        row[f"{score}_gap"] = value - whole if value is not None and whole is not None else None
        if (family != "all" and score in FLAGGED_BY and iv is not None and whole is not None
                and not iv[0] <= whole <= iv[1]):
            flagged.append(score)
    row["flagged"] = ", ".join(flagged)
    return row
