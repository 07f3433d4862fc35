"""Referral (selective prediction): keep the confident cases, refer the rest to a clinician.

A case is kept when its confidence score is at least the threshold. Ties matter: every case whose score
equals the threshold is kept with it, so the curves below are functions of the threshold, not of an
arbitrary order among equal scores.
"""

import numpy as np

DEFAULT_TARGETS = (0.90, 0.95)


def _ordered(labels, probs, score):
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    score = probs.max(axis=1) if score is None else np.asarray(score, np.float64)
    if len(score) != len(labels) or len(probs) != len(labels):
        raise ValueError(f"{len(labels)} labels, {len(probs)} probability rows and {len(score)} scores differ")
    order = np.argsort(-score, kind="stable")
    return labels[order], probs[order].argmax(axis=1), score[order]


def _tie_ends(score):
    """For each position of descending `score`, the index one past the last case with the same score."""
    new = np.r_[score[1:] != score[:-1], True]
    ends = np.flatnonzero(new) + 1
    return np.repeat(ends, np.diff(np.r_[0, ends]))


def risk_coverage(labels, probs, score=None):
    """Accuracy and balanced accuracy of the kept cases at every threshold, most confident first.

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities (their argmax is the decision).
        score: (N,) confidence, higher = more confident; default the maximum probability.

    Returns:
        {"threshold", "coverage", "accuracy", "balanced_accuracy"}: lists, one entry per distinct score, in
        descending threshold order (coverage rising to 1).
    """
    labels, pred, score = _ordered(labels, probs, score)
    n = len(labels)
    ends = np.unique(_tie_ends(score))
    correct = np.cumsum(pred == labels)
    classes = np.unique(labels)
    # Per class: how many of the first k are of that class, and how many of those are right.
    seen = np.stack([np.cumsum(labels == c) for c in classes])
    right = np.stack([np.cumsum((labels == c) & (pred == c)) for c in classes])
    out = {"threshold": [], "coverage": [], "accuracy": [], "balanced_accuracy": []}
    for end in ends:
        k = end - 1
        present = seen[:, k] > 0
        out["threshold"].append(float(score[k]))
        out["coverage"].append(float(end / n))
        out["accuracy"].append(float(correct[k] / end))
        out["balanced_accuracy"].append(float((right[present, k] / seen[present, k]).mean()))
    return out


def aurc(labels, probs, score=None):
    """Area under the risk-coverage curve: the mean, over cases, of the error rate of the cases kept with it.

    Each case contributes the risk (1 - accuracy) of the set kept at its own score as threshold; lower is
    better. A perfect ranking of the same errors gives the smallest area.

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities.
        score: (N,) confidence (default the maximum probability).
    """
    labels, pred, score = _ordered(labels, probs, score)
    if not len(labels):
        return None
    ends = _tie_ends(score)
    errors = np.cumsum(pred != labels)
    return float((errors[ends - 1] / ends).mean())


def threshold_for_accuracy(labels, probs, target, score=None):
    """The lowest threshold whose kept cases reach `target` accuracy (the most coverage at that accuracy).

    Args:
        labels: int labels (N,) of the split the threshold is chosen on (validation).
        probs: (N, C) probabilities.
        target: accuracy the kept cases must reach, e.g. 0.95.
        score: (N,) confidence (default the maximum probability).

    Returns:
        {"target", "threshold", "coverage", "accuracy", "images"}; threshold None (refer everything) when no
        threshold reaches the target.
    """
    curve = risk_coverage(labels, probs, score)
    reached = [i for i, a in enumerate(curve["accuracy"]) if a >= target - 1e-12]
    if not reached:
        return {"target": float(target), "threshold": None, "coverage": 0.0, "accuracy": None,
                "images": int(len(labels))}
    i = reached[-1]
    return {"target": float(target), "threshold": curve["threshold"][i], "coverage": float(curve["coverage"][i]),
            "accuracy": curve["accuracy"][i], "images": int(len(labels))}


def operating_point(labels, probs, threshold, score=None):
    """Coverage, accuracy and balanced accuracy of the cases kept at a fixed threshold (e.g. chosen on val).

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities.
        threshold: keep cases whose score is >= threshold; None keeps none.
        score: (N,) confidence (default the maximum probability).
    """
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    score = probs.max(axis=1) if score is None else np.asarray(score, np.float64)
    kept = np.zeros(len(labels), bool) if threshold is None else score >= threshold
    pred = probs.argmax(axis=1)
    out = {"threshold": threshold, "coverage": float(kept.mean()) if len(kept) else 0.0, "kept": int(kept.sum()),
           "referred": int((~kept).sum()), "accuracy": None, "balanced_accuracy": None}
    if kept.any():
        out["accuracy"] = float((pred[kept] == labels[kept]).mean())
        classes = np.unique(labels[kept])
        out["balanced_accuracy"] = float(np.mean([(pred[kept][labels[kept] == c] == c).mean() for c in classes]))
    return out


def view_spread(view_probs):
    """Disagreement of test-time views: the standard deviation, over views, of the probability of the class
    their mean predicts (0 when every view agrees). As a confidence score, use its negative.

    Args:
        view_probs: (V, N, C) probabilities of V test-time views.
    """
    view_probs = np.asarray(view_probs, np.float64)
    top = view_probs.mean(axis=0).argmax(axis=1)
    return view_probs[:, np.arange(view_probs.shape[1]), top].std(axis=0)


def parse_targets(text):
    """Target accuracies from `0.90,0.95` (each in (0, 1]); a bad value is one line naming it.

    Args:
        text: comma-separated accuracies, or a sequence of numbers.
    """
    if isinstance(text, (int, float)):
        text = [text]
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"--refer-at {item!r} is not a number; give accuracies such as 0.90,0.95") from None
        if not 0 < value <= 1:
            raise ValueError(f"--refer-at {value}: a target accuracy lies in (0, 1], e.g. 0.95")
        out.append(value)
    if not out:
        raise ValueError("--refer-at needs at least one accuracy, e.g. 0.90,0.95")
    return tuple(out)
