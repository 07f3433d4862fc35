"""`seg-eval`: masks in the ISIC submission format, scored exactly like the official scorer."""

import os

import pandas as pd

from skinkeras import distribute, runs
from skinkeras.config import SegEvalConfig
from skinkeras.data.isic2018 import limit_pairs
from skinkeras.data.masks import mask_name, read_mask, write_mask
from skinkeras.data.segdir import MASKS_DIR
from skinkeras.data.sets import segmentation_pairs
from skinkeras.inference import load_model, predict_original_size
from skinkeras.precision import precision_of
from skinkeras.intervals import segmentation_intervals
from skinkeras.metrics import SEG_METRICS, mean_scores, score_mask_folders, seg_scores
from skinkeras.models.contract import SEGMENTATION
from skinkeras.report.figures import WorstImages


def with_intervals(metrics, frame, bootstrap=1000, seed=0):
    """Adds 95% bootstrap intervals (images resampled) of every mean score to `metrics`.

    Args:
        metrics: the mean scores (updated in place: "intervals", "bootstrap").
        frame: per-image scores (image_id and SEG_METRICS columns).
        bootstrap: resamples (0: none).
        seed: bootstrap seed.
    """
    if bootstrap and len(frame):
        found = segmentation_intervals(frame, SEG_METRICS, n_resamples=bootstrap, seed=seed)
        metrics["intervals"] = {k: found[k] for k in SEG_METRICS if k in found}
        metrics["bootstrap"] = found["bootstrap"]
    return metrics


def write_seg_report(out, per_image, skipped, extra=None, bootstrap=1000, seed=0):
    """Writes per_image.csv, metrics.json and skipped.csv of a segmentation evaluation.

    Args:
        out: output folder.
        per_image: list of dicts with image_id and SEG_METRICS.
        skipped: list of (path, reason).
        extra: additional metrics.json entries.
        bootstrap: bootstrap resamples for the intervals (0: none).
        seed: bootstrap seed.
    """
    frame = pd.DataFrame(per_image, columns=["image_id", *SEG_METRICS]).sort_values("image_id")
    frame.to_csv(os.path.join(out, "per_image.csv"), index=False, float_format="%.6f")
    metrics = {**mean_scores(per_image), "images": len(per_image), "skipped": len(skipped), **(extra or {})}
    with_intervals(metrics, frame, bootstrap, seed)
    runs.write_json(os.path.join(out, "metrics.json"), metrics)
    runs.write_skipped(out, skipped)
    return metrics


def seg_eval_model(model_path, out, data_dir=None, images=None, masks=None, subset="train", limit=None, seed=0,
                   batch_size=8, progress=True, dataset="isic2018", bootstrap=1000, cache=None, precision=None):
    """Predicts masks for a labelled set, writes them in the ISIC submission format and scores them.

    Masks go to OUT/masks/ID_segmentation.png (0/255, original size); scores
    per image to per_image.csv; the 8 lowest-Dice images as image | truth |
    prediction to OUT/worst/ with worst.csv; macro means to metrics.json (keys dice,
    jaccard, threshold_jaccard, accuracy, sensitivity, specificity), computed
    exactly like the official ISIC scorer, with 95% bootstrap intervals (images resampled).

    Args:
        model_path: `.keras` model.
        out: output folder.
        data_dir: dataset folder in the official layout of `dataset`.
        images: plain image folder (instead of data_dir).
        masks: plain mask folder.
        subset: official subset (train, val, test) with data_dir.
        limit: evaluate the first N pairs of a seeded order.
        seed: seed of that order.
        batch_size: prediction batch size.
        progress: show a progress bar.
        dataset: isic2018 | ph2 | isic2017 (external validation sets).
        bootstrap: bootstrap resamples for the intervals (0: none); `seed` seeds them.
        cache: input cache written by `prepare` for these pairs: nothing is decoded, and images, masks and the
            scores are at the cache's resolution (the model's input size), not the original size.
        precision: fp32 | bf16 | fp16 to predict in, or None for the model's own.
    """
    model = load_model(model_path, task=SEGMENTATION, precision=precision)
    pairs, problems = segmentation_pairs(dataset, data_dir, images, masks, subset=subset)
    if limit:
        pairs = sorted(limit_pairs(pairs, limit, seed), key=lambda p: p.image_id)
    os.makedirs(os.path.join(out, MASKS_DIR), exist_ok=True)
    runs.write_json(os.path.join(out, "env.json"), {**runs.environment(seed), "model": os.path.abspath(model_path)})
    truth_paths = {p.image_id: p.mask_path for p in pairs}
    per_image, skipped = [], list(problems)
    cached_truth = {}  # image_id -> mask read from the cache, when there is one
    worst = WorstImages()

    def score(image_id, image, pred):
        write_mask(os.path.join(out, MASKS_DIR, mask_name(image_id)), pred)
        try:
            truth = cached_truth.pop(image_id) if image_id in cached_truth else read_mask(truth_paths[image_id])
        except ValueError as exc:
            skipped.append((truth_paths[image_id], str(exc)))
            return
        if truth.shape != pred.shape:
            skipped.append((truth_paths[image_id], f"mask size {truth.shape[::-1]} differs from image size "
                                                   f"{pred.shape[::-1]}"))
            return
        scores = seg_scores(truth, pred)
        per_image.append({"image_id": image_id, **scores})
        worst.add(image_id, image, truth, pred, scores)

    if cache:
        skipped += _predict_cached(model, pairs, cache, dataset, batch_size, score, cached_truth)
    else:
        skipped += predict_original_size(model, [(p.image_id, p.image_path) for p in pairs], batch_size, progress,
                                         score)
    if not per_image:
        raise ValueError(f"No image could be scored; see {os.path.join(out, 'skipped.csv')}")
    worst.save(out)
    extra = {"model": os.path.abspath(model_path), "dataset": dataset, "pred_dir": os.path.join(out, MASKS_DIR),
             "precision": precision_of(model)}
    if cache:
        extra.update({"cache": os.path.abspath(cache), "resolution": "cache (model input size), not original size"})
    return write_seg_report(out, per_image, skipped, extra, bootstrap, seed)


def _predict_cached(model, pairs, cache, dataset, batch_size, on_result, cached_truth):
    """Predicts the pairs from an input cache at its resolution; the cached masks replace the truth files.

    Args:
        model: segmentation model.
        pairs: the pairs to score.
        cache: the cache folder.
        dataset: the pairs' dataset, checked against the cache's.
        batch_size: prediction batch size.
        on_result: called as on_result(image_id, image_uint8, mask_bool).
        cached_truth: image_id -> bool truth mask, filled here from the cache before each `on_result`.

    Returns:
        skipped [(path, reason)]: the pairs that did not decode when the cache was prepared.
    """
    from skinkeras.data.cache import IMAGES, MASKS, open_cache
    from skinkeras.inference import model_image_size, predict_masks

    selection = open_cache(cache).check(dataset, model_image_size(model)[0], [p.image_id for p in pairs],
                                        {IMAGES: [p.image_path for p in pairs], MASKS: [p.mask_path for p in pairs]})
    positions = [i for i, ok in enumerate(selection.ok) if ok]
    images, masks = selection.view(IMAGES, positions), selection.view(MASKS, positions)
    for start in range(0, len(positions), batch_size):
        batch = range(start, min(start + batch_size, len(positions)))
        pictures = images[list(batch)]
        probs = predict_masks(model, pictures, batch_size)
        for j, image, prob in zip(batch, pictures, probs):
            image_id = pairs[positions[j]].image_id
            cached_truth[image_id] = masks[j][..., 0] > 0
            on_result(image_id, image, prob > 0.5)
    return selection.skipped


def seg_eval_folders(truth_dir, pred_dir, out, bootstrap=1000, seed=0):
    """Scores existing mask folders (no model), like `isic-challenge-scoring segmentation`.

    Args:
        truth_dir: ground-truth masks (ISIC_xxxxxxx_segmentation.png).
        pred_dir: predicted masks with the same ids.
        out: output folder.
        bootstrap: bootstrap resamples for the intervals (0: none).
        seed: bootstrap seed.
    """
    os.makedirs(out, exist_ok=True)
    frame, means = score_mask_folders(truth_dir, pred_dir)
    frame.to_csv(os.path.join(out, "per_image.csv"), index=False, float_format="%.6f")
    metrics = {**means, "images": len(frame), "truth_dir": os.path.abspath(truth_dir),
               "pred_dir": os.path.abspath(pred_dir)}
    with_intervals(metrics, frame, bootstrap, seed)
    runs.write_json(os.path.join(out, "metrics.json"), metrics)
    return metrics


def evaluate_segmentation(cfg: SegEvalConfig, progress=True):
    """The `seg-eval` stage: scores a model on a labelled set, or existing mask folders; returns metrics.

    Args:
        cfg: `SegEvalConfig`.
        progress: show a progress bar.
    """
    if cfg.truth_dir:
        return seg_eval_folders(cfg.truth_dir, cfg.pred_dir, cfg.out, cfg.bootstrap, cfg.seed)
    distribute.configure(cfg.devices)
    return seg_eval_model(cfg.model, cfg.out, cfg.data_dir, cfg.images, cfg.masks, cfg.subset, cfg.limit, cfg.seed,
                          cfg.batch_size, progress, cfg.dataset, cfg.bootstrap, cfg.cache, cfg.precision)
