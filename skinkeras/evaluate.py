"""Segmentation evaluation in the ISIC formats, and the `segment` stage that feeds classification."""

import os

import keras
import numpy as np
import pandas as pd
from PIL import Image

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
        model: keras model with image inputs (the first one decides).
    """
    shape = next(t.shape for t in model.inputs if len(t.shape) == 4)
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


# ---------------------------------------------------------------- classification (paper 6.2)

# Official column names of the challenge CSVs (ISIC 2018 Task 3 for HAM10000, ISIC 2019), in their order.
OFFICIAL_COLUMNS = {
    "ham10000": {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"},
    "isic2019": {c: c for c in ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")},
}


def isic_csv(image_ids, values, classes, dataset, path):
    """Writes an ISIC challenge CSV: `image` + one column per class with its official name and order.

    Args:
        image_ids: image ids.
        values: (N, C) probabilities (or one-hot truth) in `classes` order.
        classes: our class names.
        dataset: "ham10000" or "isic2019".
        path: output file.
    """
    columns = OFFICIAL_COLUMNS[dataset]
    frame = pd.DataFrame({"image": list(image_ids)})
    for official, ours in columns.items():
        frame[official] = np.asarray(values)[:, list(classes).index(ours)]
    frame.to_csv(path, index=False, float_format="%.8f")
    return path


def plot_confusion(labels, pred, classes, path):
    """Confusion matrix as counts and row-normalised (paper Figure 6).

    Args:
        labels: int labels.
        pred: int predictions.
        classes: class names.
        path: PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    counts = np.zeros((n, n), np.int64)
    np.add.at(counts, (labels, pred), 1)
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, matrix, title, fmt in ((axes[0], counts, "counts", "d"), (axes[1], normalised, "row-normalised", ".2f")):
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(n), classes, rotation=45)
        ax.set_yticks(range(n), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, format(matrix[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_roc(labels, probs, classes, path):
    """One-vs-rest ROC curve per class.

    Args:
        labels: int labels.
        probs: (N, C) probabilities.
        classes: class names.
        path: PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc, roc_curve

    fig, ax = plt.subplots(figsize=(6, 6))
    for c, name in enumerate(classes):
        truth = labels == c
        if 0 < truth.sum() < len(truth):
            fpr, tpr, _ = roc_curve(truth, probs[:, c])
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def load_cls_run(model_path):
    """Loads RUN/best.keras of `cls-train` with its run folder's config, class names and metadata encoder.

    Args:
        model_path: the `.keras` file inside a cls-train run folder.

    Returns:
        (model, ClsTrainConfig, class names, MetadataEncoder, run folder).
    """
    from skinkeras.config import ClsTrainConfig, from_json
    from skinkeras.data.metadata import MetadataEncoder
    from skinkeras.train import dataset_classes

    run_dir = os.path.dirname(os.path.abspath(model_path))
    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise FileNotFoundError(f"{run_dir} has no config.json: give the best.keras inside a cls-train run folder")
    model = load_model(model_path)
    cfg = from_json(ClsTrainConfig, os.path.join(run_dir, "config.json"))
    encoder = MetadataEncoder.from_dict(runs.read_json(os.path.join(run_dir, "metadata_encoder.json")))
    return model, cfg, dataset_classes(cfg.dataset), encoder, run_dir


def cls_records(cfg, run_dir, subset="test", data_dir=None, images=None, seg_dir=None):
    """Labelled records of a run's split subset, or of all images of another dataset folder.

    Args:
        cfg: the run's `ClsTrainConfig`.
        run_dir: the run folder (its split.csv).
        subset: train, val or test.
        data_dir: another dataset folder (all its images) instead of the split.
        images: image folder(s) of that dataset.
        seg_dir: segmented images of that dataset (default: the run's).

    Returns:
        (records DataFrame, problems [(path, reason)], description of the source).
    """
    import dataclasses

    from skinkeras.data import classification as cls_data
    from skinkeras.train import load_cls_records

    if data_dir or images:
        cfg = dataclasses.replace(cfg, data_dir=data_dir, images=images, seg_dir=seg_dir or cfg.seg_dir)
        df, problems = load_cls_records(cfg)
        return df, problems, f"all images of {data_dir or images}"
    df, problems = load_cls_records(cfg)
    df, more = cls_data.apply_split(df, cls_data.read_split(os.path.join(run_dir, "split.csv")))
    df = df[df.subset == subset].reset_index(drop=True)
    return df, list(problems) + list(more), f"the {subset} split of {run_dir}"


def cls_eval(model_path, out, subset="test", data_dir=None, images=None, seg_dir=None, batch_size=16, progress=True):
    """Evaluates a classifier on its run's test split (or another labelled set) in the ISIC formats.

    Writes metrics.json (accuracy, balanced_accuracy, auc_macro, top2_accuracy,
    per-class precision / recall / F1 / AUC), predictions.csv and
    ground_truth.csv (ISIC challenge format, official class names),
    confusion_matrix.png and roc.png.

    Args:
        model_path: RUN/best.keras of `cls-train` (its run folder supplies config, split and metadata encoder).
        out: output folder.
        subset: split subset to evaluate (train, val, test) when no other data is given.
        data_dir: evaluate all images of another dataset folder instead.
        images: image folder(s) of that dataset.
        seg_dir: segmented images of that dataset.
        batch_size: prediction batch size.
        progress: show progress bars.
    """
    from skinkeras.data.pipeline import ClassificationDataset
    from skinkeras.metrics import classification_scores
    from skinkeras.train import cls_arrays, model_input_names

    model, cfg, classes, encoder, run_dir = load_cls_run(model_path)
    df, problems, source = cls_records(cfg, run_dir, subset, data_dir, images, seg_dir)
    if df.empty:
        raise ValueError(f"No images to evaluate in {source}")
    os.makedirs(out, exist_ok=True)
    names = model_input_names(model)
    size = model_image_size(model)
    arrays, kept, skipped = cls_arrays(df, encoder, size, names, progress)
    labels = df.label.to_numpy(np.int64)
    probs = model.predict(ClassificationDataset(arrays, labels, names, batch_size, plan=lambda epoch: kept),
                          verbose=1 if progress else 0)
    labels, ids = labels[kept], df.image_id.to_numpy()[kept]
    # The CSV holds 8 decimals; scoring the same rounded values keeps our numbers identical to the official scorer's.
    probs = np.round(np.asarray(probs, np.float64), 8)
    metrics = classification_scores(labels, probs, classes)
    metrics.update({"source": source, "model": os.path.abspath(model_path), "skipped": len(skipped)})
    runs.write_json(os.path.join(out, "metrics.json"), metrics)
    isic_csv(ids, probs, classes, cfg.dataset, os.path.join(out, "predictions.csv"))
    isic_csv(ids, np.eye(len(classes))[labels], classes, cfg.dataset, os.path.join(out, "ground_truth.csv"))
    plot_confusion(labels, probs.argmax(axis=1), classes, os.path.join(out, "confusion_matrix.png"))
    plot_roc(labels, probs, classes, os.path.join(out, "roc.png"))
    runs.write_skipped(out, list(problems) + skipped)
    return metrics
