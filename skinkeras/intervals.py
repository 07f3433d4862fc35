"""Percentile-bootstrap confidence intervals and paired bootstrap differences for the evaluation metrics.

Method (``bootstrap`` entry of every result):

* Resampling unit: a cluster bootstrap. Classification resamples lesions (every image of a drawn
  lesion comes along, so a lesion photographed 3 times weighs 3 images each time it is drawn);
  segmentation resamples images. Each resample draws G groups with replacement out of the G
  distinct groups, with ``numpy.random.default_rng(seed)``, one ``integers(0, G, G)`` call per
  resample, groups numbered in sorted key order (so shuffling the rows changes nothing).
* Statistic: the metric recomputed on the resample, defined exactly as ``skinkeras.metrics``
  defines it (``classification_scores`` for accuracy, balanced accuracy, AUCs; ``mean_scores``
  for the segmentation means). A drawn item counted k times is the same as k copies of it.
* Interval: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled values
  (``numpy.quantile``, linear interpolation): the percentile interval, no bias correction.
* Undefined resamples (an AUC whose class has no positive, or no negative, in the resample) are
  left out of that metric's interval and counted in ``bootstrap["undefined"][metric]``; a metric
  undefined in every resample gets the interval ``None``.
* Paired differences use the same resampled groups for both models; the two-sided p-value is
  ``min(1, 2 * fraction of resamples whose difference is <= 0)`` for a positive point difference
  (``>= 0`` for a negative one; 1 when the point difference is 0). Ties at 0 count against the
  difference, which errs on the side of a larger p.

Only numpy and pandas for the arithmetic; the metric names come from `skinkeras.metrics`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from skinkeras.metrics import SEG_METRICS

METHOD = "percentile bootstrap"
CLS_INTERVAL_METRICS = ("accuracy", "balanced_accuracy", "auc_macro")
# Resample rows held at once, as counts per item: bounds memory at ~16 MB of float64 per array.
_CELLS_PER_CHUNK = 2**21
_MAX_LISTED = 10


# ----------------------------------------------------------------------------- resampling


def _group_codes(groups):
    """Integer code per item (groups numbered in sorted key order) and the number of groups.

    Args:
        groups: length-N sequence of hashable group keys.
    """
    keys = pd.Series(np.asarray(groups, dtype=object).ravel())
    if keys.isna().any():
        raise ValueError(f"{int(keys.isna().sum())} item(s) have no group key; give every item a lesion/image id")
    if keys.empty:
        raise ValueError("no items to resample; pass at least one group key")
    codes, uniques = pd.factorize(keys, sort=True)
    return codes.astype(np.intp), len(uniques)


def _check_resamples(n_resamples):
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples!r}: pass a positive integer (e.g. 1000)")
    return int(n_resamples)


def _draws(n_groups, n_resamples, seed):
    """The drawn group codes of each resample, one array of n_groups codes per resample.

    Args:
        n_groups: G, the number of distinct groups.
        n_resamples: number of resamples.
        seed: seed of ``numpy.random.default_rng``.
    """
    rng = np.random.default_rng(seed)
    # One call per resample, so resample r is the same whatever chunking a caller uses.
    for _ in range(_check_resamples(n_resamples)):
        yield rng.integers(0, n_groups, size=n_groups)


def resample_indices(groups, n_resamples, seed):
    """Item indices of each cluster-bootstrap resample: G groups drawn with replacement, all their items.

    Args:
        groups: length-N group keys (lesion ids; image ids when every item is its own group).
        n_resamples: number of resamples.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same resamples.

    Returns:
        list of ``n_resamples`` int arrays; each lists, drawn group by drawn group, every item
        of the group (in the input order), so its length is the total size of the drawn groups.
    """
    codes, n_groups = _group_codes(groups)
    members = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = []
    for draw in _draws(n_groups, n_resamples, seed):
        if n_groups == len(codes):
            out.append(members[draw])
            continue
        drawn_sizes = sizes[draw]
        # Position k of the resample is member (k - where its drawn group begins) of that group.
        begins = np.concatenate([[0], np.cumsum(drawn_sizes)[:-1]])
        offsets = np.repeat(starts[draw] - begins, drawn_sizes)
        out.append(members[offsets + np.arange(drawn_sizes.sum())])
    return out


def _chunk_rows(n_items):
    return max(1, _CELLS_PER_CHUNK // max(1, n_items))


def _weights_from_draws(codes, n_groups, n_resamples, seed):
    """Yields (rows, N) float arrays: how many times each item is in each resample.

    Args:
        codes: group code per item.
        n_groups: number of groups.
        n_resamples: number of resamples.
        seed: seed of ``numpy.random.default_rng``.
    """
    rows = []
    for draw in _draws(n_groups, n_resamples, seed):
        rows.append(np.bincount(draw, minlength=n_groups)[codes])
        if len(rows) == _chunk_rows(len(codes)):
            yield np.asarray(rows, np.float64)
            rows = []
    if rows:
        yield np.asarray(rows, np.float64)


def _weights_from_indices(resamples, n_items):
    """Yields (rows, N) float arrays of how many times each item is in each given resample.

    Args:
        resamples: sequence of int index arrays into the N items.
        n_items: N.
    """
    if isinstance(resamples, np.ndarray) and resamples.ndim == 1:
        raise ValueError("resamples is one index array; pass a list of them (e.g. [indices])")
    rows = []
    for indices in resamples:
        indices = np.asarray(indices)
        if indices.size and (not np.issubdtype(indices.dtype, np.integer)
                             or indices.min() < 0 or indices.max() >= n_items):
            raise ValueError(f"resample indices must be integers in [0, {n_items}); got {indices[:5]}...")
        rows.append(np.bincount(indices.astype(np.intp), minlength=n_items))
        if len(rows) == _chunk_rows(n_items):
            yield np.asarray(rows, np.float64)
            rows = []
    if rows:
        yield np.asarray(rows, np.float64)


def _full(n_items):
    return np.ones((1, n_items), np.float64)


# ----------------------------------------------------------------------------- classification metrics


class _Classification:
    """Labels and probabilities prepared once, scored on many resamples given as count matrices.

    A count matrix ``w`` has one row per resample and one column per item (how many times the
    item was drawn), so every metric is a weighted metric and all resamples go through at once.

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities or scores.
    """

    def __init__(self, labels, probs):
        labels = np.asarray(labels)
        probs = np.asarray(probs, np.float64)
        if probs.ndim != 2 or labels.shape != (probs.shape[0],):
            raise ValueError(f"labels {labels.shape} and probabilities {probs.shape} do not match; "
                             "pass labels (N,) and probabilities (N, C)")
        if labels.size == 0:
            raise ValueError("no images to score; pass at least one label")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels have dtype {labels.dtype}; pass integer class indices")
        n_classes = probs.shape[1]
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(f"labels must lie in [0, {n_classes}); got {labels.min()}..{labels.max()}")
        if not np.isfinite(probs).all():
            raise ValueError("probabilities hold NaN or infinity; score finite values")
        self.labels, self.probs, self.n_classes = labels.astype(np.int64), probs, n_classes
        self.onehot = (self.labels[:, None] == np.arange(n_classes)).astype(np.float64)
        correct = probs.argmax(axis=1) == self.labels
        self.correct = correct.astype(np.float64)
        self.hits = self.onehot * self.correct[:, None]
        self._ranked = {}
        self._memo = (None, {})

    def accuracy(self, w):
        return (w @ self.correct) / w.sum(axis=1)

    def balanced_accuracy(self, w):
        # Mean recall over the classes present in the resample, as classification_scores (and the ISIC scorer).
        support = w @ self.onehot
        present = support > 0
        recall = np.divide(w @ self.hits, support, out=np.zeros_like(support), where=present)
        return recall.sum(axis=1) / present.sum(axis=1)

    def _ranking(self, column):
        """Items of the class and of the rest, and where each positive's score falls among the negatives' scores."""
        if column not in self._ranked:
            scores = self.probs[:, column]
            is_pos = self.labels == column
            negatives = np.flatnonzero(~is_pos)
            negatives = negatives[np.argsort(scores[negatives], kind="stable")]
            positives = np.flatnonzero(is_pos)
            ranked = scores[negatives]
            below = np.searchsorted(ranked, scores[positives], side="left")
            up_to = np.searchsorted(ranked, scores[positives], side="right")
            self._ranked[column] = positives, negatives, below, up_to
        return self._ranked[column]

    def class_auc(self, w, column):
        """One-vs-rest ROC AUC of one class per resample, NaN where it has no positive or no negative."""
        # auc_macro and "<class>_auc" ask for the same chunk's AUCs; compute each class once per chunk.
        if self._memo[0] is not w:
            self._memo = (w, {})
        done = self._memo[1]
        if column not in done:
            positives, negatives, below, up_to = self._ranking(column)
            # Mann-Whitney U with ties counted half: a drawn positive beats the drawn negatives scored
            # below it and ties half of those scored the same, read off a running count of negatives.
            running = np.zeros((w.shape[0], len(negatives) + 1))
            np.cumsum(w[:, negatives], axis=1, out=running[:, 1:])
            beaten = running[:, below]
            tied = running[:, up_to] - beaten
            drawn = w[:, positives]
            wins = (drawn * (beaten + 0.5 * tied)).sum(axis=1)
            n_pos, n_neg = drawn.sum(axis=1), running[:, -1]
            defined = (n_pos > 0) & (n_neg > 0)
            done[column] = np.divide(wins, n_pos * n_neg, out=np.full_like(wins, np.nan), where=defined)
        return done[column]

    def auc_macro(self, w):
        aucs = np.stack([self.class_auc(w, c) for c in range(self.n_classes)])
        defined = np.isfinite(aucs)
        counts = defined.sum(axis=0)
        total = np.where(defined, aucs, 0.0).sum(axis=0)
        return np.divide(total, counts, out=np.full(w.shape[0], np.nan), where=counts > 0)


def _over(chunks, score):
    return np.concatenate([score(w) for w in chunks])


def accuracy(labels, probs, resamples):
    """Accuracy of argmax predictions on each resample.

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities.
        resamples: sequence of index arrays into the N items (e.g. from ``resample_indices``).

    Returns:
        float array, one value per resample.
    """
    data = _Classification(labels, probs)
    return _over(_weights_from_indices(resamples, len(data.labels)), data.accuracy)


def balanced_accuracy(labels, probs, resamples):
    """Balanced accuracy (mean recall over the classes present in the resample) on each resample.

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities.
        resamples: sequence of index arrays into the N items.

    Returns:
        float array, one value per resample; equals ``classification_scores(labels[i], probs[i], ...)
        ["balanced_accuracy"]`` for each index array ``i``.
    """
    data = _Classification(labels, probs)
    return _over(_weights_from_indices(resamples, len(data.labels)), data.balanced_accuracy)


def auc_macro(labels, probs, resamples):
    """Mean one-vs-rest ROC AUC over the classes with a positive and a negative, on each resample.

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities.
        resamples: sequence of index arrays into the N items.

    Returns:
        float array, one value per resample, NaN where no class has an AUC.
    """
    data = _Classification(labels, probs)
    return _over(_weights_from_indices(resamples, len(data.labels)), data.auc_macro)


def class_auc(labels, probs, resamples, column):
    """ROC AUC of one class against the rest (e.g. melanoma vs rest) on each resample.

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities.
        resamples: sequence of index arrays into the N items.
        column: index of the class.

    Returns:
        float array, one value per resample, NaN where the class has no positive or no negative
        (sklearn's ``roc_auc_score`` elsewhere).
    """
    data = _Classification(labels, probs)
    if not 0 <= column < data.n_classes:
        raise ValueError(f"column {column} is not a class index in [0, {data.n_classes})")
    return _over(_weights_from_indices(resamples, len(data.labels)), lambda w: data.class_auc(w, column))


# ----------------------------------------------------------------------------- intervals


def _check_level(level):
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}: pass a coverage strictly between 0 and 1 (e.g. 0.95)")
    return float(level)


def percentile_interval(values, level=0.95):
    """Percentile interval of bootstrap values, leaving out the undefined (NaN) ones.

    Args:
        values: one metric value per resample, NaN where the metric is undefined.
        level: coverage, e.g. 0.95 for the 2.5% and 97.5% quantiles.

    Returns:
        (``[lo, hi]`` as python floats, or None when no value is defined; number of values left out).
    """
    level = _check_level(level)
    values = np.asarray(values, np.float64)
    defined = values[np.isfinite(values)]
    left_out = int(values.size - defined.size)
    if not defined.size:
        return None, left_out
    lo, hi = np.quantile(defined, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)], left_out


def _method(unit, n_resamples, level, seed, n_groups, undefined):
    # A numpy integer seed would not serialise to JSON.
    seed = int(seed) if isinstance(seed, (int, np.integer)) else seed
    return {"method": METHOD, "unit": unit, "resamples": int(n_resamples), "level": float(level),
            "seed": seed, "groups": int(n_groups), "undefined": undefined}


def _unit(codes, n_groups):
    # Lesion ids that are all distinct resample exactly like images, so say so.
    return "image" if n_groups == len(codes) else "lesion"


def _cls_scorers(data, class_names):
    """Every classification metric by name: the three of ``CLS_INTERVAL_METRICS`` and ``"<class>_auc"`` per class.

    Args:
        data: the prepared ``_Classification``.
        class_names: one name per probability column.
    """
    if len(class_names) != data.n_classes:
        raise ValueError(f"{len(class_names)} class names for {data.n_classes} probability columns")
    scorers = {"accuracy": data.accuracy, "balanced_accuracy": data.balanced_accuracy, "auc_macro": data.auc_macro}
    for column, name in enumerate(class_names):
        scorers[f"{name}_auc"] = lambda w, c=column: data.class_auc(w, c)
    return scorers


def _group_codes_for(groups, n_items):
    if groups is None:
        return np.arange(n_items, dtype=np.intp), n_items
    if len(groups) != n_items:
        raise ValueError(f"{len(groups)} group keys for {n_items} images; pass one lesion id per image")
    return _group_codes(groups)


def classification_intervals(labels, probs, class_names, groups, n_resamples=1000, seed=0, level=0.95,
                             positive=None):
    """Percentile-bootstrap intervals of accuracy, balanced accuracy, macro AUC (and one class's AUC).

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities.
        class_names: C class names.
        groups: length-N lesion ids (the resampling unit), or None to resample images.
        n_resamples: number of bootstrap resamples.
        seed: seed of ``numpy.random.default_rng``.
        level: coverage of the intervals.
        positive: optional class name whose one-vs-rest AUC gets an interval too (e.g. "MEL").

    Returns:
        ``{"accuracy": [lo, hi], "balanced_accuracy": [lo, hi], "auc_macro": [lo, hi],
        "<positive>_auc": [lo, hi] (with positive), "bootstrap": {"method": "percentile bootstrap",
        "unit": "lesion" | "image", "resamples": n, "level": level, "seed": seed, "groups": G,
        "undefined": {metric: resamples left out}}}``; an interval is None when the metric is
        undefined in every resample. The unit is "image" when every group holds one image.
    """
    data = _Classification(labels, probs)
    level = _check_level(level)
    every = _cls_scorers(data, class_names)
    if positive is not None and positive not in class_names:
        raise ValueError(f"positive class {positive!r} is not one of {list(class_names)}")
    wanted = [*CLS_INTERVAL_METRICS, *([f"{positive}_auc"] if positive is not None else [])]
    scorers = {name: every[name] for name in wanted}
    codes, n_groups = _group_codes_for(groups, len(data.labels))
    values = {name: [] for name in scorers}
    for w in _weights_from_draws(codes, n_groups, n_resamples, seed):
        for name, score in scorers.items():
            values[name].append(score(w))
    out, undefined = {}, {}
    for name, parts in values.items():
        out[name], undefined[name] = percentile_interval(np.concatenate(parts), level)
    out["bootstrap"] = _method(_unit(codes, n_groups), n_resamples, level, seed, n_groups, undefined)
    return out


# ----------------------------------------------------------------------------- segmentation


def _listed(names):
    names = [str(n) for n in names]
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _seg_values(per_image, metrics, what="per_image"):
    """(N, M) float array of the metric columns, after checking the frame.

    Args:
        per_image: DataFrame with ``image_id`` and the metric columns.
        metrics: metric column names.
        what: name used in error messages.
    """
    if "image_id" not in per_image.columns:
        raise ValueError(f"{what} has no image_id column; pass the per-image frame of score_mask_folders")
    missing = [m for m in metrics if m not in per_image.columns]
    if missing:
        raise ValueError(f"{what} lacks the metric column(s) {missing}; it has {list(per_image.columns)}")
    if per_image.empty:
        raise ValueError(f"{what} holds no images; score at least one")
    duplicated = per_image["image_id"][per_image["image_id"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"{what} lists image(s) more than once: {_listed(duplicated)}")
    values = per_image[list(metrics)].to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{what} holds NaN or infinite metric values; every image needs a score")
    return values


def segmentation_means(per_image, resamples, metrics=SEG_METRICS):
    """Mean of each per-image metric column on each resample.

    Args:
        per_image: DataFrame with ``image_id`` and the metric columns (``score_mask_folders``' frame).
        resamples: sequence of index arrays into the rows.
        metrics: metric column names.

    Returns:
        ``{metric: float array, one mean per resample}``.
    """
    values = _seg_values(per_image, metrics)
    means = np.concatenate([(w @ values) / w.sum(axis=1)[:, None]
                            for w in _weights_from_indices(resamples, len(values))])
    return {m: means[:, k] for k, m in enumerate(metrics)}


def segmentation_intervals(per_image, metrics=SEG_METRICS, n_resamples=1000, seed=0, level=0.95):
    """Percentile-bootstrap intervals of the mean per-image segmentation metrics, resampling images.

    Args:
        per_image: DataFrame with ``image_id`` and the metric columns (``score_mask_folders``' frame).
        metrics: metric column names.
        n_resamples: number of bootstrap resamples.
        seed: seed of ``numpy.random.default_rng``.
        level: coverage of the intervals.

    Returns:
        ``{metric: [lo, hi], ..., "bootstrap": {...}}`` with the ``bootstrap`` entry of
        ``classification_intervals`` (unit "image"; every count in ``undefined`` is 0, a mean is
        always defined).
    """
    metrics = tuple(metrics)
    values = _seg_values(per_image, metrics)
    level = _check_level(level)
    codes, n_groups = _group_codes(per_image["image_id"])
    means = np.concatenate([(w @ values) / w.sum(axis=1)[:, None]
                            for w in _weights_from_draws(codes, n_groups, n_resamples, seed)])
    out, undefined = {}, {}
    for k, m in enumerate(metrics):
        out[m], undefined[m] = percentile_interval(means[:, k], level)
    out["bootstrap"] = _method("image", n_resamples, level, seed, n_groups, undefined)
    return out


# ----------------------------------------------------------------------------- paired differences


def _p_value(point, differences):
    """Two-sided bootstrap p: twice the fraction of resamples not on the point difference's side, at most 1.

    Args:
        point: the difference on the full set.
        differences: the defined resampled differences.
    """
    if point == 0 or not differences.size:
        return 1.0
    against = differences <= 0 if point > 0 else differences >= 0
    return float(min(1.0, 2.0 * against.mean()))


def _difference(point, differences, metric, unit, n_resamples, level, seed, n_groups):
    interval, left_out = percentile_interval(differences, level)
    defined = differences[np.isfinite(differences)]
    return {"metric": metric, "difference": float(point), "interval": interval,
            "p_value": _p_value(point, defined),
            "bootstrap": _method(unit, n_resamples, level, seed, n_groups, {metric: left_out})}


def paired_difference(labels, probs_a, probs_b, class_names, groups, metric="balanced_accuracy", n_resamples=1000,
                      seed=0, level=0.95):
    """Paired bootstrap of a classification metric's difference, model A minus model B, on the same lesions.

    Args:
        labels: int labels (N,).
        probs_a: (N, C) probabilities of model A.
        probs_b: (N, C) probabilities of model B on the same images, in the same order.
        class_names: C class names.
        groups: length-N lesion ids, or None to resample images.
        metric: "accuracy", "balanced_accuracy", "auc_macro" or "<class name>_auc".
        n_resamples: number of bootstrap resamples.
        seed: seed of ``numpy.random.default_rng``.
        level: coverage of the interval.

    Returns:
        ``{"metric": metric, "difference": a - b on the full set, "interval": [lo, hi] (None if
        undefined in every resample), "p_value": two-sided bootstrap p (module docstring),
        "bootstrap": {...} (as in classification_intervals, undefined counting resamples where
        either model's value is undefined)}``.
    """
    a, b = _Classification(labels, probs_a), _Classification(labels, probs_b)
    if a.probs.shape != b.probs.shape:
        raise ValueError(f"model A probabilities {a.probs.shape} and model B {b.probs.shape} differ in shape")
    level = _check_level(level)
    score_a, score_b = _cls_scorers(a, class_names), _cls_scorers(b, class_names)
    if metric not in score_a:
        raise ValueError(f"metric {metric!r} is not one of {list(score_a)}")
    n_items = len(a.labels)
    point = float(score_a[metric](_full(n_items))[0] - score_b[metric](_full(n_items))[0])
    if not np.isfinite(point):
        raise ValueError(f"{metric} is undefined on the full set (a class without positives or negatives)")
    codes, n_groups = _group_codes_for(groups, n_items)
    differences = np.concatenate([score_a[metric](w) - score_b[metric](w)
                                  for w in _weights_from_draws(codes, n_groups, n_resamples, seed)])
    return _difference(point, differences, metric, _unit(codes, n_groups), n_resamples, level, seed, n_groups)


def paired_seg_difference(per_image_a, per_image_b, metric="dice", n_resamples=1000, seed=0, level=0.95):
    """Paired bootstrap of a mean segmentation metric's difference, A minus B, on the same resampled images.

    Args:
        per_image_a: per-image DataFrame of model A (``image_id`` and the metric column).
        per_image_b: per-image DataFrame of model B; it must score the same image ids (any order).
        metric: the metric column, e.g. "dice".
        n_resamples: number of bootstrap resamples.
        seed: seed of ``numpy.random.default_rng``.
        level: coverage of the interval.

    Returns:
        the ``paired_difference`` dict (unit "image").
    """
    _seg_values(per_image_a, [metric], "model A's frame")
    _seg_values(per_image_b, [metric], "model B's frame")
    level = _check_level(level)
    ids_a, ids_b = set(per_image_a["image_id"]), set(per_image_b["image_id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b, key=str), sorted(ids_b - ids_a, key=str)
        raise ValueError("the two frames score different images: "
                         f"{len(only_b)} missing from A ({_listed(only_b) or '-'}), "
                         f"{len(only_a)} missing from B ({_listed(only_a) or '-'}); score both on the same images")
    joined = per_image_a[["image_id", metric]].merge(per_image_b[["image_id", metric]], on="image_id",
                                                     suffixes=("_a", "_b"))
    values_a, values_b = joined[f"{metric}_a"].to_numpy(np.float64), joined[f"{metric}_b"].to_numpy(np.float64)
    delta = values_a - values_b
    codes, n_groups = _group_codes(joined["image_id"])
    # A mean is linear, so the mean difference of a resample is the difference of its means.
    differences = np.concatenate([(w @ delta) / w.sum(axis=1)
                                  for w in _weights_from_draws(codes, n_groups, n_resamples, seed)])
    point = values_a.mean() - values_b.mean()
    return _difference(point, differences, metric, "image", n_resamples, level, seed, n_groups)
