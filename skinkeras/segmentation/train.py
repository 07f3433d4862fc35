"""`seg-train`: Deep-UNet and the Table 1 baselines with BCE + Dice and deep supervision (paper 4.1.2)."""

import csv
import os

import keras

from skinkeras import runs
from skinkeras.config import SegTrainConfig
from skinkeras.data.isic2018 import Pair, find_pairs, limit_pairs, split_pairs
from skinkeras.data.pipeline import SegmentationDataset, load_pairs
from skinkeras.inference import predict_masks
from skinkeras.losses import BCEDiceLoss
from skinkeras.metrics import DiceCoefficient, JaccardIndex, mean_scores, seg_scores
from skinkeras.models.contract import AUX_OUTPUTS, MASK
from skinkeras.models.registry import build_model
from skinkeras.report.figures import WorstImages, plot_history
from skinkeras.report.html import write_run_report
from skinkeras.training import TrainingPlan, fit_run, open_run

MONITOR = f"val_{MASK}_dice"


def write_split(path, train, val):
    """Writes the split as CSV (image_id, image_path, mask_path, subset).

    Args:
        path: output CSV.
        train: training pairs.
        val: validation pairs.
    """
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "image_path", "mask_path", "subset"])
        for subset, pairs in (("train", train), ("val", val)):
            writer.writerows([p.image_id, os.path.abspath(p.image_path), os.path.abspath(p.mask_path), subset]
                             for p in pairs)


def read_split(path):
    """Reads a split CSV back into (train, val) lists of pairs.

    Args:
        path: split.csv of a run.

    Raises:
        FileNotFoundError, ValueError: the file is missing or damaged, in one line (`runs.read_csv`).
    """
    subsets = {"train": [], "val": []}
    for row in runs.read_csv(path, columns=("image_id", "image_path", "mask_path", "subset")).itertuples():
        if row.subset not in subsets:
            raise runs.run_file_error(path, f"subset {row.subset!r} of {row.image_id}, not train or val")
        subsets[row.subset].append(Pair(row.image_id, row.image_path, row.mask_path))
    return subsets["train"], subsets["val"]


def compile_segmentation(model, cfg):
    """Compiles with BCE + Dice on every output (aux weights of Eq. 4) and Dice / Jaccard on the main mask.

    Args:
        model: segmentation model with dict outputs.
        cfg: `SegTrainConfig`.
    """
    names = list(model.output.keys())
    weights = {MASK: 1.0, **dict(zip(AUX_OUTPUTS, cfg.aux_weights))}
    # Keras prefixes metric names with the output's only when there are several outputs; naming them here gives
    # the baselines (one output) the same `mask_dice` log keys, and so the same MONITOR, as the Deep-UNet.
    prefix = f"{MASK}_" if len(names) == 1 else ""
    # Weighted metrics and losses averaged over the sample weights: see `compile_classifier`.
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss={name: BCEDiceLoss(reduction="mean_with_sample_weight") for name in names},
        loss_weights={name: weights[name] for name in names},
        weighted_metrics={MASK: [DiceCoefficient(name=f"{prefix}dice"), JaccardIndex(name=f"{prefix}jaccard")]},
        jit_compile="auto" if cfg.jit_compile is None else cfg.jit_compile,
    )
    return model


def load_split(run, progress=True):
    """Loads the run's pairs into memory and splits them, writing (or, on resume, reusing) split.csv.

    Bad files are dropped before the split, so both sides hold only usable
    pairs; they are listed in skipped.csv.

    Args:
        run: the opened `Run`.
        progress: show a progress bar.

    Returns:
        ((x_train, y_train), (x_val, y_val), val_ids): uint8 arrays and the validation image ids.
    """
    cfg = run.cfg
    split_csv = run.path(runs.SPLIT_CSV)
    size = (cfg.image_size, cfg.image_size)
    reuse = run.resume and os.path.exists(split_csv)
    if reuse:
        train_pairs, val_pairs = read_split(split_csv)
        pairs = train_pairs + val_pairs
    else:
        pairs, problems = find_pairs(cfg.data_dir, cfg.images, cfg.masks)
        runs.write_skipped(run.dir, problems)
        pairs = limit_pairs(pairs, cfg.limit, cfg.seed)
    if cfg.cache:
        return _cached_split(run, pairs, (train_pairs, val_pairs) if reuse else None, progress)
    if progress:
        print(f"Loading {len(pairs)} image/mask pairs at {size[0]}x{size[1]}")
    images, masks, kept, skipped = load_pairs(pairs, size, progress)
    if not reuse:
        runs.write_skipped(run.dir, skipped)
        train_pairs, val_pairs = split_pairs(kept, cfg.val_fraction, cfg.seed)
        write_split(split_csv, train_pairs, val_pairs)
    row = {p.image_id: i for i, p in enumerate(kept)}
    train_idx = [row[p.image_id] for p in train_pairs if p.image_id in row]
    val_idx = [row[p.image_id] for p in val_pairs if p.image_id in row]
    if progress:
        print(f"{len(train_idx)} training and {len(val_idx)} validation pairs ({len(skipped)} skipped)")
    val_ids = [kept[i].image_id for i in val_idx]
    return (images[train_idx], masks[train_idx]), (images[val_idx], masks[val_idx]), val_ids


def _cached_split(run, pairs, saved, progress):
    """`load_split` from the run's input cache: the same split, `CachedRows` instead of decoded arrays.

    Args:
        run: the opened `Run`.
        pairs: the pairs the run reads (found, limited; or those of the saved split).
        saved: (train, val) pairs of split.csv on resume, else None (a new split is made and written).
        progress: print what is read.
    """
    from skinkeras.data.cache import IMAGES, MASKS, open_cache

    cfg = run.cfg
    cache = open_cache(cfg.cache)
    selection = cache.check("isic2018", cfg.image_size, [p.image_id for p in pairs],
                            {IMAGES: [p.image_path for p in pairs], MASKS: [p.mask_path for p in pairs]})
    kept = [p for p, ok in zip(pairs, selection.ok) if ok]
    if saved is None:
        runs.write_skipped(run.dir, selection.skipped)
        train_pairs, val_pairs = split_pairs(kept, cfg.val_fraction, cfg.seed)
        write_split(run.path(runs.SPLIT_CSV), train_pairs, val_pairs)
    else:
        train_pairs, val_pairs = saved
    position = {p.image_id: i for i, p in enumerate(pairs) if selection.ok[i]}
    train_idx = [position[p.image_id] for p in train_pairs if p.image_id in position]
    val_idx = [position[p.image_id] for p in val_pairs if p.image_id in position]
    if progress:
        print(f"{len(train_idx)} training and {len(val_idx)} validation pairs from the cache {cfg.cache} "
              f"({len(selection.skipped)} skipped)")
    val_ids = [pairs[i].image_id for i in val_idx]
    return ((selection.view(IMAGES, train_idx), selection.view(MASKS, train_idx)),
            (selection.view(IMAGES, val_idx), selection.view(MASKS, val_idx)), val_ids)


def train_segmentation(cfg: SegTrainConfig, resume=False, resume_epochs=None, progress=True, overwrite=False):
    """Trains a segmentation model and writes its run folder; returns the folder path.

    Writes config.json, env.json, split.csv, skipped.csv (if any input was
    left out), last.keras (resumable), best.keras (best validation Dice,
    main output only), history.csv, training_curves.png, metrics.json
    (validation scores of best.keras at the training resolution, parameters,
    size, time), worst/ with worst.csv (the 8 lowest-Dice validation images as
    image | truth | prediction) and report.html.

    Args:
        cfg: `SegTrainConfig`.
        resume: continue the run in `cfg.out` from its last.keras, with the run's saved config.
        resume_epochs: with resume, the new total number of epochs (default: the saved one).
        progress: show progress bars.
        overwrite: replace a run that `cfg.out` already holds.
    """
    if not resume and cfg.data_dir is None and cfg.images is None:
        raise ValueError("Give --data-dir DIR (ISIC 2018 layout) or --images DIR --masks DIR")
    with open_run(cfg, "seg-train", resume, resume_epochs, overwrite) as run:
        return _fit(run, progress)


def _fit(run, progress):
    cfg = run.cfg
    (x_train, y_train), (x_val, y_val), val_ids = load_split(run, progress)
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError(f"Empty training or validation split ({len(x_train)} / {len(x_val)} pairs); "
                         "give more images or a larger --limit")

    def datasets(model):
        names = list(model.output.keys())
        train = SegmentationDataset(x_train, y_train, cfg.batch_size, names, augment=True, shuffle=True,
                                    seed=cfg.seed, flip_prob=cfg.flip_prob, max_rotation=cfg.max_rotation)
        return train, SegmentationDataset(x_val, y_val, cfg.batch_size, names)

    def evaluate(best_model):
        probs = predict_masks(best_model, x_val, batch_size=max(1, min(cfg.batch_size, 16)))
        per_image = [seg_scores(t[..., 0] > 0, p > 0.5) for t, p in zip(y_val, probs)]
        worst = WorstImages()
        for image_id, image, truth, pred, scores in zip(val_ids, x_val, y_val, probs, per_image):
            worst.add(image_id, image, truth[..., 0] > 0, pred > 0.5, scores)
        worst.save(run.dir)
        return {"val": mean_scores(per_image), "val_images": len(x_val),
                "note": "validation scores of best.keras at the training resolution; seg-eval scores at original size",
                "first_epoch_val_dice": run.history[0].get(MONITOR) if run.history else None}

    plan = TrainingPlan(build=lambda: compile_segmentation(build_model(cfg), cfg), datasets=datasets,
                        monitor=MONITOR, evaluate=evaluate, curve_metric="dice", draw_curves=plot_history,
                        write_report=write_run_report, info={"encoder": cfg.encoder})
    return fit_run(run, plan, progress)
