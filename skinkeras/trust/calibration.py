"""Calibration of class probabilities: reliability bins, ECE / MCE / Brier / NLL, and temperature scaling.

Temperature scaling (Guo et al., ICML 2017) divides the logits by one scalar fitted on held-out data by
minimising the negative log-likelihood; it never changes the predicted class. Our classifiers output
probabilities, and log-probabilities are the logits up to a per-row constant that the softmax ignores,
so the temperature is applied to log p.
"""

import numpy as np

ECE_BINS = 15
BINNING = f"{ECE_BINS} equal-width bins of the top-class probability over [0, 1]"
# Probabilities below this are treated as this in log p: NLL stays finite when a model puts exactly 0 on the truth.
LOG_FLOOR = 1e-12
TEMPERATURE_RANGE = (0.05, 20.0)


def _arrays(labels, probs):
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or len(labels) != len(probs):
        raise ValueError(f"probabilities must be (N, C) with N = {len(labels)} labels; got {probs.shape}")
    return labels, probs


def reliability_bins(labels, probs, bins=ECE_BINS):
    """Top-class confidence against accuracy in equal-width bins (the reliability diagram's data).

    A confidence c falls in bin i when lower_i < c <= upper_i (the first bin also holds 0).

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities.
        bins: number of equal-width bins over [0, 1].

    Returns:
        {"lower", "upper", "count", "confidence", "accuracy"}: lists of `bins` values; mean confidence and
        accuracy are None in an empty bin.
    """
    labels, probs = _arrays(labels, probs)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    hit_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    mean = lambda s: [float(v / n) if n else None for v, n in zip(s, count)]  # noqa: E731
    return {"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "count": count.tolist(),
            "confidence": mean(conf_sum), "accuracy": mean(hit_sum)}


def calibration_errors(labels, probs, bins=ECE_BINS):
    """Expected and maximum calibration error, Brier score and negative log-likelihood.

    - ECE: sum over bins of (bin count / N) x |accuracy - mean confidence| (`reliability_bins`);
    - MCE: the largest |accuracy - mean confidence| over non-empty bins;
    - Brier: mean over images of the squared distance between the probability vector and the one-hot truth
      (summed over classes, so it lies in [0, 2]);
    - NLL: mean of -log p(true class), p floored at `LOG_FLOOR`.

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities.
        bins: ECE / MCE bins.
    """
    labels, probs = _arrays(labels, probs)
    table = reliability_bins(labels, probs, bins)
    count = np.asarray(table["count"], np.float64)
    gaps = np.array([abs(a - c) if n else 0.0
                     for a, c, n in zip(table["accuracy"], table["confidence"], table["count"])])
    onehot = np.eye(probs.shape[1])[labels]
    truth = probs[np.arange(len(labels)), labels]
    return {"ece": float((count / count.sum() * gaps).sum()),
            "mce": float(gaps[count > 0].max()) if count.any() else 0.0,
            "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
            "nll": float(-np.log(np.maximum(truth, LOG_FLOOR)).mean()),
            "images": int(len(labels))}


def calibration_intervals(labels, probs, groups, n_resamples=1000, seed=0, level=0.95, bins=ECE_BINS):
    """Percentile-bootstrap intervals of ECE, MCE, Brier and NLL, resampled by lesion.

    Args:
        labels: int labels (N,).
        probs: (N, C) probabilities.
        groups: lesion id of each row (the resampling unit), or None for images.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed (the same seed draws the same lesions as `classification_intervals`).
        level: coverage.
        bins: ECE / MCE bins.

    Returns:
        {metric: [low, high]}.
    """
    from skinkeras.intervals import percentile_interval, resample_indices

    labels, probs = _arrays(labels, probs)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    values = {k: [] for k in ("ece", "mce", "brier", "nll")}
    for rows in resample_indices(groups, n_resamples, seed):
        errors = calibration_errors(labels[rows], probs[rows], bins)
        for k in values:
            values[k].append(errors[k])
    return {k: percentile_interval(v, level)[0] for k, v in values.items()}


def scale_temperature(probs, temperature):
    """Probabilities with the temperature applied: softmax(log p / T).

    Args:
        probs: (N, C) probabilities.
        temperature: T > 0 (1 leaves them as they are; T > 1 softens over-confident ones).
    """
    probs = np.asarray(probs, np.float64)
    if temperature is None or temperature == 1.0:
        return probs
    logits = np.log(np.maximum(probs, np.finfo(np.float64).tiny)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def _nll(labels, probs, temperature):
    scaled = scale_temperature(probs, temperature)
    return float(-np.log(np.maximum(scaled[np.arange(len(labels)), labels], LOG_FLOOR)).mean())


def fit_temperature(labels, probs):
    """The temperature minimising the negative log-likelihood of `probs` (bounded search over log T).

    Args:
        labels: int labels (N,) of held-out images (the run's validation split).
        probs: (N, C) their raw probabilities.

    Returns:
        {"temperature", "nll_raw", "nll_calibrated", "images"}.
    """
    from scipy.optimize import minimize_scalar

    labels, probs = _arrays(labels, probs)
    if not len(labels):
        raise ValueError("no images to fit a temperature on")
    low, high = np.log(TEMPERATURE_RANGE)
    found = minimize_scalar(lambda log_t: _nll(labels, probs, np.exp(log_t)), bounds=(low, high), method="bounded",
                            options={"xatol": 1e-6})
    temperature = float(np.exp(found.x))
    return {"temperature": temperature, "nll_raw": _nll(labels, probs, 1.0),
            "nll_calibrated": _nll(labels, probs, temperature), "images": int(len(labels))}
