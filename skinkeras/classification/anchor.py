"""`cls-anchor`: the classical anchor a deep classifier must beat, fitted and scored on that classifier's own split.

`../shared/notes/anchors.md` gives the anchor's numbers on another split (80/20 by lesion); a deep row of
`reproduce` is scored on the 15% test part of its own 70/15/15 split, so the two numbers are not on the same
lesions. Here the anchor is rebuilt from its description and fitted on a run's training split, then scored on
the run's test split and written as an ordinary `cls-eval` folder: intervals by lesion, and a paired bootstrap
against any model's evaluation of the same split (`cls-eval --against`).

The anchor: colour histograms of the lesion centre (HSV, 16 bins a channel, plus each channel's mean and
spread) and the clinical metadata (age, sex, site, encoded as the deep models get them, plus their
availability), standardised, into a multinomial logistic regression with balanced class weights (scikit-learn).
"""

import os

import numpy as np
from PIL import Image

from skinkeras import runs
from skinkeras.classification.evaluate import write_scores
from skinkeras.classification.records import load_cls_records
from skinkeras.data import classification as cls_data
from skinkeras.data.metadata import MetadataEncoder
from skinkeras.data.pipeline import ImageReadError, read_rgb
from skinkeras.data.sets import dataset_classes

CENTRE = 0.5  # side of the central crop as a share of each image side: dermoscopy centres the lesion
BINS = 16
MAX_ITER = 5000


def colour_features(rgb, centre=CENTRE, bins=BINS):
    """HSV histograms of the image centre (`bins` a channel, as shares), then each channel's mean and spread.

    Args:
        rgb: uint8 (H, W, 3) image.
        centre: side of the central crop as a share of each image side.
        bins: histogram bins a channel.

    Returns:
        float64 vector of 3 * bins + 6 values.
    """
    h, w = rgb.shape[:2]
    ch, cw = max(1, round(h * centre)), max(1, round(w * centre))
    crop = np.ascontiguousarray(rgb[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw])
    hsv = np.asarray(Image.fromarray(crop).convert("HSV"), np.float64).reshape(-1, 3) / 255.0
    hists = [np.histogram(hsv[:, c], bins=bins, range=(0.0, 1.0))[0] / len(hsv) for c in range(3)]
    return np.concatenate([*hists, hsv.mean(axis=0), hsv.std(axis=0)])


def anchor_features(df, encoder, progress=False):
    """Colour features and encoded metadata of every readable image of `df`.

    Args:
        df: records (image_path, age, sex, site).
        encoder: fitted `MetadataEncoder`.
        progress: print a line every 1000 images.

    Returns:
        (features (K, F) of the K readable rows, their positions in `df`, [(path, reason)] skipped).
    """
    colours, kept, skipped = [], [], []
    for i, path in enumerate(df.image_path):
        try:
            colours.append(colour_features(read_rgb(path)))
            kept.append(i)
        except ImageReadError as exc:
            skipped.append((path, str(exc)))
        if progress and (i + 1) % 1000 == 0:
            print(f"colour features: {i + 1} of {len(df)} images")
    kept = np.asarray(kept, np.int64)
    meta, avail = encoder.transform(df.iloc[kept])
    return np.concatenate([np.asarray(colours).reshape(len(kept), -1), meta, avail], axis=1), kept, skipped


def fit_anchor(features, labels, seed=0):
    """The anchor's classifier fitted: standardised features, logistic regression with balanced class weights.

    Args:
        features: (N, F) training features.
        labels: int labels (N,).
        seed: random state of the solver.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=MAX_ITER,
                                                               random_state=seed))
    return model.fit(features, labels)


def class_probabilities(model, features, n_classes):
    """(N, n_classes) probabilities; a class the model never saw in training gets 0.

    Args:
        model: fitted `fit_anchor` pipeline.
        features: (N, F) features.
        n_classes: number of classes of the dataset.
    """
    probs = np.zeros((len(features), n_classes))
    probs[:, model.classes_] = model.predict_proba(features)
    return probs


def cls_anchor(run_dir, out, subset="test", bootstrap=1000, seed=0, progress=True):
    """Fits the anchor on a cls-train run's training split and scores it on `subset`, as a cls-eval folder.

    Args:
        run_dir: a cls-train run folder (its config.json and split.csv).
        out: output folder (what `cls-eval` writes; metrics.json adds "anchor" and "train_images").
        subset: the split subset to score (val or test).
        bootstrap: bootstrap resamples for the intervals (0: none).
        seed: solver and bootstrap seed.
        progress: print progress lines.

    Returns:
        the metrics dict.
    """
    from skinkeras.config import ClsTrainConfig, from_json

    config = os.path.join(run_dir, "config.json")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{run_dir} has no config.json: give a cls-train run folder (--run RUN)")
    cfg = from_json(ClsTrainConfig, config)
    classes = dataset_classes(cfg.dataset)
    if subset not in cls_data.SUBSETS:
        raise ValueError(f"Unknown subset {subset!r}; valid: {', '.join(cls_data.SUBSETS)}")
    df, problems = load_cls_records(cfg, needs_segmented=False)
    df, more = cls_data.apply_split(df, cls_data.read_split(os.path.join(run_dir, runs.SPLIT_CSV)))
    train, scored = (df[df.subset == s].reset_index(drop=True) for s in ("train", subset))
    if train.empty or scored.empty:
        raise ValueError(f"{run_dir}: no training or {subset} images in its split; check its split.csv")
    encoder = MetadataEncoder().fit(train)  # as cls-train fits it: training rows only
    x_train, kept_train, skipped = anchor_features(train, encoder, progress)
    x, kept, skipped_here = anchor_features(scored, encoder, progress)
    model = fit_anchor(x_train, train.label.to_numpy(np.int64)[kept_train], seed)
    probs = class_probabilities(model, x, len(classes))
    os.makedirs(out, exist_ok=True)
    scored = scored.iloc[kept]
    info = {"source": f"the {subset} split of {run_dir}", "run": os.path.abspath(run_dir),
            "anchor": "colour histograms of the lesion centre + metadata, logistic regression with balanced class "
                      "weights", "train_images": len(kept_train), "skipped": len(skipped_here)}
    # Balanced class weights train it as if every class were equally frequent: its prior is uniform, so its
    # balanced decision is its argmax.
    return write_scores(out, scored.image_id.to_numpy(), scored.label.to_numpy(np.int64),
                        scored.lesion_id.astype(str).to_numpy(), probs, classes, cfg.dataset,
                        np.full(len(classes), 1.0 / len(classes)), bootstrap, seed, info=info,
                        skipped=list(problems) + list(more) + skipped + skipped_here)
