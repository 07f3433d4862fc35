"""Segmentation evaluation in the ISIC formats, and the `segment` stage that feeds classification."""

import os

import keras
import numpy as np
import pandas as pd
from PIL import Image

import skinkeras.layers  # noqa: F401  (registers the custom layers before loading)
from skinkeras import runs
from skinkeras.data.isic2018 import find_pairs, limit_pairs, list_images
from skinkeras.data.pipeline import ImageReadError, read_rgb, resize_rgb
from skinkeras.metrics import SEG_METRICS, mean_scores, read_mask, score_mask_folders, seg_scores, write_mask
from skinkeras.train import predict_masks

MASKS_DIR = "masks"
SEGMENTED_DIR = "segmented"


def load_model(path):
    """Loads a `.keras` model written by this project, with a clear error when the file is missing.

    Args:
        path: `.keras` file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file not found: {path} (train one with `python cli.py seg-train`)")
    return keras.models.load_model(path, compile=False)


def model_image_size(model):
    """(H, W) that the model takes.

    Args:
        model: keras model with one image input.
    """
    shape = model.inputs[0].shape
    return int(shape[1]), int(shape[2])


def probability_to_mask(prob, size):
    """Resizes a probability map to (H, W) bilinearly and thresholds it at 0.5.

    Args:
        prob: float (h, w) probabilities.
        size: (H, W) of the original image.
    """
    img = Image.fromarray(prob.astype(np.float32), mode="F").resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(img) > 0.5


def mask_name(image_id):
    """ISIC submission file name of an image's mask.

    Args:
        image_id: image id (file stem).
    """
    return f"{image_id}_segmentation.png"


def predict_original_size(model, items, batch_size=8, progress=True, on_result=None):
    """Predicts binary masks at each image's original size, reading images lazily in batches.

    Unreadable images are skipped and returned, never raised, so a long run keeps its finished work.

    Args:
        model: segmentation model.
        items: list of (image_id, image_path).
        batch_size: images per prediction batch.
        progress: show a progress bar.
        on_result: called as on_result(image_id, image_uint8, mask_bool) for each image, as soon as it is done.

    Returns:
        list of (image_path, reason) skipped.
    """
    size = model_image_size(model)
    bar = keras.utils.Progbar(len(items), unit_name="image") if progress and items else None
    skipped, done = [], 0
    for start in range(0, len(items), batch_size):
        batch, originals = [], []
        for image_id, path in items[start : start + batch_size]:
            try:
                image = read_rgb(path)
            except ImageReadError as exc:
                skipped.append((path, str(exc)))
                continue
            batch.append((image_id, path))
            originals.append(image)
        if batch:
            probs = predict_masks(model, np.stack([resize_rgb(im, size) for im in originals]), batch_size)
            for (image_id, _), image, prob in zip(batch, originals, probs):
                on_result(image_id, image, probability_to_mask(prob, image.shape[:2]))
        done += len(items[start : start + batch_size])
        if bar is not None:
            bar.update(done)
    return skipped


def write_seg_report(out, per_image, skipped, extra=None):
    """Writes per_image.csv, metrics.json and skipped.csv of a segmentation evaluation.

    Args:
        out: output folder.
        per_image: list of dicts with image_id and SEG_METRICS.
        skipped: list of (path, reason).
        extra: additional metrics.json entries.
    """
    frame = pd.DataFrame(per_image, columns=["image_id", *SEG_METRICS]).sort_values("image_id")
    frame.to_csv(os.path.join(out, "per_image.csv"), index=False, float_format="%.6f")
    metrics = {**mean_scores(per_image), "images": len(per_image), "skipped": len(skipped), **(extra or {})}
    runs.write_json(os.path.join(out, "metrics.json"), metrics)
    runs.write_skipped(out, skipped)
    return metrics


def seg_eval_model(model_path, out, data_dir=None, images=None, masks=None, subset="train", limit=None, seed=0,
                   batch_size=8, progress=True):
    """Predicts masks for a labelled set, writes them in the ISIC submission format and scores them.

    Masks go to OUT/masks/ID_segmentation.png (0/255, original size); scores
    per image to per_image.csv; macro means to metrics.json (keys dice,
    jaccard, threshold_jaccard, accuracy, sensitivity, specificity), computed
    exactly like the official ISIC scorer.

    Args:
        model_path: `.keras` model.
        out: output folder.
        data_dir: ISIC 2018 Task 1 folder (official layout).
        images: plain image folder (instead of data_dir).
        masks: plain mask folder.
        subset: official subset (train, val, test) with data_dir.
        limit: evaluate the first N pairs of a seeded order.
        seed: seed of that order.
        batch_size: prediction batch size.
        progress: show a progress bar.
    """
    model = load_model(model_path)
    pairs, problems = find_pairs(data_dir, images, masks, subset=subset)
    if limit:
        pairs = sorted(limit_pairs(pairs, limit, seed), key=lambda p: p.image_id)
    os.makedirs(os.path.join(out, MASKS_DIR), exist_ok=True)
    runs.write_json(os.path.join(out, "env.json"), {**runs.environment(seed), "model": os.path.abspath(model_path)})
    truth_paths = {p.image_id: p.mask_path for p in pairs}
    per_image, skipped = [], list(problems)

    def score(image_id, image, pred):
        write_mask(os.path.join(out, MASKS_DIR, mask_name(image_id)), pred)
        try:
            truth = read_mask(truth_paths[image_id])
        except ValueError as exc:
            skipped.append((truth_paths[image_id], str(exc)))
            return
        if truth.shape != pred.shape:
            skipped.append((truth_paths[image_id], f"mask size {truth.shape[::-1]} differs from image size "
                                                   f"{pred.shape[::-1]}"))
            return
        per_image.append({"image_id": image_id, **seg_scores(truth, pred)})

    skipped += predict_original_size(model, [(p.image_id, p.image_path) for p in pairs], batch_size, progress, score)
    if not per_image:
        raise ValueError(f"No image could be scored; see {os.path.join(out, 'skipped.csv')}")
    return write_seg_report(out, per_image, skipped, {"model": os.path.abspath(model_path),
                                                      "pred_dir": os.path.join(out, MASKS_DIR)})


def seg_eval_folders(truth_dir, pred_dir, out):
    """Scores existing mask folders (no model), like `isic-challenge-scoring segmentation`.

    Args:
        truth_dir: ground-truth masks (ISIC_xxxxxxx_segmentation.png).
        pred_dir: predicted masks with the same ids.
        out: output folder.
    """
    os.makedirs(out, exist_ok=True)
    frame, means = score_mask_folders(truth_dir, pred_dir)
    frame.to_csv(os.path.join(out, "per_image.csv"), index=False, float_format="%.6f")
    metrics = {**means, "images": len(frame), "truth_dir": os.path.abspath(truth_dir),
               "pred_dir": os.path.abspath(pred_dir)}
    runs.write_json(os.path.join(out, "metrics.json"), metrics)
    return metrics


def segmented_image(image, mask):
    """Original image times its binary lesion mask (paper Figure 2).

    Args:
        image: uint8 (H, W, 3).
        mask: bool (H, W).
    """
    return image * mask[..., None].astype(image.dtype)


def segment_folder(model_path, images, out, batch_size=8, progress=True):
    """Writes predicted masks and segmented images for a whole folder, skipping what is already there.

    Layout: OUT/masks/ID_segmentation.png (0/255) and OUT/segmented/ID.jpg
    (original x mask, JPEG quality 95: a tenth of a PNG's size, which matters
    for 10k-25k images); the classification stage reads OUT/segmented/.

    Args:
        model_path: `.keras` segmentation model.
        images: image folder.
        out: output folder.
        batch_size: prediction batch size.
        progress: show a progress bar.
    """
    files = list_images(images)
    if not files:
        raise ValueError(f"No images in {images}")
    os.makedirs(os.path.join(out, MASKS_DIR), exist_ok=True)
    os.makedirs(os.path.join(out, SEGMENTED_DIR), exist_ok=True)

    def outputs(image_id):
        return (os.path.join(out, MASKS_DIR, mask_name(image_id)),
                os.path.join(out, SEGMENTED_DIR, f"{image_id}.jpg"))

    items = [(os.path.splitext(os.path.basename(p))[0], p) for p in files]
    todo = [(i, p) for i, p in items if not all(os.path.exists(o) for o in outputs(i))]
    if progress:
        print(f"{len(items) - len(todo)} of {len(items)} images already segmented in {out}; {len(todo)} to do")
    written = []

    def save(image_id, image, mask):
        mask_path, seg_path = outputs(image_id)
        write_mask(mask_path, mask)
        tmp = seg_path + ".tmp.jpg"
        Image.fromarray(segmented_image(image, mask)).save(tmp, quality=95)
        os.replace(tmp, seg_path)  # a half-written file must not count as done on the next run
        written.append(image_id)

    skipped = []
    if todo:
        skipped = predict_original_size(load_model(model_path), todo, batch_size, progress, save)
    runs.write_skipped(out, skipped)
    report = {"images": len(items), "written": len(written), "already_there": len(items) - len(todo),
              "skipped": len(skipped), "model": os.path.abspath(model_path), "source": os.path.abspath(images)}
    runs.write_json(os.path.join(out, "segment.json"), report)
    return report
