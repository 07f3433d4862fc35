"""Training loops that write run folders: segmentation (paper 4.1.2)."""

import csv
import dataclasses
import math
import os
import time

import keras
import numpy as np

from skinkeras import runs
from skinkeras.config import SegTrainConfig, from_json, to_json
from skinkeras.data.isic2018 import Pair, find_pairs, limit_pairs, split_pairs
from skinkeras.data.pipeline import SegmentationDataset, load_pairs
from skinkeras.losses import BCEDiceLoss
from skinkeras.metrics import DiceCoefficient, JaccardIndex, mean_scores, seg_scores
from skinkeras.models.deep_unet import AUX_OUTPUTS, MAIN_OUTPUT
from skinkeras.models.seg_baselines import build_segmentation_model, inference_model


def save_atomic(model, path, **kwargs):
    """Saves a model through a temporary file so an interrupted save never destroys the previous one.

    Args:
        model: keras model.
        path: target `.keras` path.
        **kwargs: passed to `model.save`.
    """
    tmp = path + ".tmp.keras"
    model.save(tmp, **kwargs)
    os.replace(tmp, path)


def read_history(path):
    """Returns the rows of a run's history.csv as dicts of floats ([] when absent).

    Args:
        path: history.csv path.
    """
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


class RunRecorder(keras.callbacks.Callback):
    """After each epoch: saves last.keras (with optimizer, for --resume), best.keras, and a history row.

    Args:
        run_dir: run folder.
        monitor: log key whose maximum selects best.keras (validation Dice).
        best: best monitored value of earlier epochs (for resumed runs).
        export: maps the training model to the model stored as best.keras.
    """

    def __init__(self, run_dir, monitor, best=-math.inf, export=None):
        super().__init__()
        self.run_dir = run_dir
        self.monitor = monitor
        self.best = best
        self.export = export or (lambda m: m)
        self.epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.monitor not in logs:
            raise KeyError(f"monitor {self.monitor!r} not in logs {sorted(logs)}")
        value = float(logs[self.monitor])
        if value > self.best:
            self.best = value
            save_atomic(self.export(self.model), os.path.join(self.run_dir, "best.keras"))
        save_atomic(self.model, os.path.join(self.run_dir, "last.keras"))
        row = {"epoch": epoch + 1, "seconds": round(time.time() - self.epoch_start, 2)}
        row.update({k: float(v) for k, v in sorted(logs.items())})
        path = os.path.join(self.run_dir, "history.csv")
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


def step_schedule(learning_rate, step_epochs, factor):
    """Learning rate multiplied by `factor` every `step_epochs` epochs (paper: halved every 4).

    Args:
        learning_rate: initial rate.
        step_epochs: epochs per step.
        factor: multiplier per step.
    """
    return lambda epoch, lr=None: float(learning_rate * factor ** (epoch // max(1, step_epochs)))


def plot_history(history_csv, out_png, metric="dice"):
    """Draws loss and validation metric curves of a run.

    Args:
        history_csv: history.csv of the run.
        out_png: output PNG path.
        metric: metric suffix to plot beside the loss.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_history(history_csv)
    if not rows:
        return None
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if key in rows[0]:
            axes[0].plot(epochs, [r[key] for r in rows], style, label=key)
    axes[0].set_xlabel("epoch")
    axes[0].set_title("loss")
    axes[0].legend()
    for key in rows[0]:
        if key.endswith(metric):
            axes[1].plot(epochs, [r[key] for r in rows], "--" if key.startswith("val_") else "-", label=key)
    axes[1].set_xlabel("epoch")
    axes[1].set_title(metric)
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


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
    """
    subsets = {"train": [], "val": []}
    with open(path) as f:
        for row in csv.DictReader(f):
            subsets[row["subset"]].append(Pair(row["image_id"], row["image_path"], row["mask_path"]))
    return subsets["train"], subsets["val"]


def model_size(model):
    """Parameter count and float32 size in MB (paper Table 1 reports model size).

    Args:
        model: keras model.
    """
    params = int(model.count_params())
    return {"params": params, "size_mb": round(params * 4 / 2**20, 2)}


def set_batchnorm_momentum(model, momentum):
    """Sets the moving-average momentum of every BatchNormalization layer, nested ones included.

    Keras defaults to 0.99; the paper trained in PyTorch, whose default is
    0.1, i.e. Keras 0.9. With 0.99 a model trained from scratch for a few
    hundred steps keeps moving statistics that lag far behind its weights,
    and predicts nothing in inference mode (validation Dice 0 while the
    training Dice is 0.86, measured on HAM10000).

    Args:
        model: keras model.
        momentum: new momentum.
    """
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            count += 1
    return count


def compile_segmentation(model, cfg):
    """Compiles with BCE + Dice on every output (aux weights of Eq. 4) and Dice / Jaccard on the main mask.

    Args:
        model: segmentation model with dict outputs.
        cfg: `SegTrainConfig`.
    """
    set_batchnorm_momentum(model, cfg.bn_momentum)
    names = list(model.output.keys())
    weights = {MAIN_OUTPUT: 1.0, **dict(zip(AUX_OUTPUTS, cfg.aux_weights))}
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss={name: BCEDiceLoss() for name in names},
        loss_weights={name: weights[name] for name in names},
        metrics={MAIN_OUTPUT: [DiceCoefficient(), JaccardIndex()]},
    )
    return model


def predict_masks(model, images, batch_size=8):
    """Predicted lesion probabilities (N, H, W) of 0-255 images, from the main output.

    Args:
        model: segmentation model (dict or single output).
        images: uint8 or float (N, H, W, 3) at the model's input size.
        batch_size: prediction batch size.
    """
    out = model.predict(np.asarray(images, dtype="float32"), batch_size=batch_size, verbose=0)
    if isinstance(out, dict):
        out = out[MAIN_OUTPUT]
    return np.asarray(out)[..., 0]


def open_run(cfg, command, resume=False, resume_epochs=None):
    """Creates or reopens a run folder, writes config.json and env.json, seeds everything.

    On resume the run's saved config is used (only the epoch total may change).

    Args:
        cfg: a config dataclass with `out`, `epochs` and `seed`.
        command: CLI command name (for the default folder name).
        resume: continue the run in `cfg.out`.
        resume_epochs: with resume, the new total number of epochs.

    Returns:
        (run_dir, resolved config).
    """
    run_dir = runs.prepare_run_dir(cfg.out, command, resume)
    if resume:
        saved = from_json(type(cfg), os.path.join(run_dir, "config.json"))
        cfg = dataclasses.replace(saved, epochs=resume_epochs or saved.epochs)
    cfg = dataclasses.replace(cfg, out=run_dir)
    to_json(cfg, os.path.join(run_dir, "config.json"))
    runs.write_json(os.path.join(run_dir, "env.json"), runs.environment(cfg.seed))
    keras.utils.set_random_seed(cfg.seed)
    return run_dir, cfg


def restore_or_build(run_dir, resume, cfg, build):
    """Returns (model, history rows): the run's last.keras on resume, else `build()` and no history.

    Args:
        run_dir: run folder.
        resume: continue from last.keras when the run has one and a history.
        cfg: the run's config (its bn_momentum is re-applied to a restored model).
        build: callable returning a new compiled model.
    """
    history = read_history(os.path.join(run_dir, "history.csv")) if resume else []
    last = os.path.join(run_dir, "last.keras")
    if history and os.path.exists(last):
        model = keras.models.load_model(last)
        # custom layers rebuild their BatchNorm sublayers from their own config, at Keras' default momentum
        set_batchnorm_momentum(model, cfg.bn_momentum)
        return model, history
    return build(), []


def load_split(cfg, run_dir, resume=False, progress=True):
    """Loads the run's pairs into memory and splits them, writing (or, on resume, reusing) split.csv.

    Bad files are dropped before the split, so both sides hold only usable
    pairs; they are listed in skipped.csv.

    Args:
        cfg: `SegTrainConfig`.
        run_dir: run folder.
        resume: reuse the run's split.csv.
        progress: show a progress bar.

    Returns:
        ((x_train, y_train), (x_val, y_val)) uint8 arrays.
    """
    split_csv = os.path.join(run_dir, "split.csv")
    size = (cfg.image_size, cfg.image_size)
    reuse = resume and os.path.exists(split_csv)
    if reuse:
        train_pairs, val_pairs = read_split(split_csv)
        pairs = train_pairs + val_pairs
    else:
        pairs, problems = find_pairs(cfg.data_dir, cfg.images, cfg.masks)
        runs.write_skipped(run_dir, problems)
        pairs = limit_pairs(pairs, cfg.limit, cfg.seed)
    if progress:
        print(f"Loading {len(pairs)} image/mask pairs at {size[0]}x{size[1]}")
    images, masks, kept, skipped = load_pairs(pairs, size, progress)
    if not reuse:
        runs.write_skipped(run_dir, skipped)
        train_pairs, val_pairs = split_pairs(kept, cfg.val_fraction, cfg.seed)
        write_split(split_csv, train_pairs, val_pairs)
    row = {p.image_id: i for i, p in enumerate(kept)}
    train_idx = [row[p.image_id] for p in train_pairs if p.image_id in row]
    val_idx = [row[p.image_id] for p in val_pairs if p.image_id in row]
    if progress:
        print(f"{len(train_idx)} training and {len(val_idx)} validation pairs ({len(skipped)} skipped)")
    return (images[train_idx], masks[train_idx]), (images[val_idx], masks[val_idx])


def train_segmentation(cfg: SegTrainConfig, resume=False, resume_epochs=None, progress=True):
    """Trains a segmentation model and writes its run folder; returns the folder path.

    Writes config.json, env.json, split.csv, skipped.csv (if any input was
    left out), last.keras (resumable), best.keras (best validation Dice,
    main output only), history.csv, training_curves.png and metrics.json
    (validation scores of best.keras at the training resolution, parameters,
    size, time).

    Args:
        cfg: `SegTrainConfig`.
        resume: continue the run in `cfg.out` from its last.keras, with the run's saved config.
        resume_epochs: with resume, the new total number of epochs (default: the saved one).
        progress: show progress bars.
    """
    run_dir, cfg = open_run(cfg, "seg-train", resume, resume_epochs)

    (x_train, y_train), (x_val, y_val) = load_split(cfg, run_dir, resume, progress)

    history_csv = os.path.join(run_dir, "history.csv")
    model, history = restore_or_build(
        run_dir, resume, cfg, lambda: compile_segmentation(build_segmentation_model(cfg.arch, **seg_builder_kwargs(cfg)),
                                                           cfg))
    initial_epoch = len(history)
    monitor = f"val_{MAIN_OUTPUT}_dice"
    best = max((r.get(monitor, -math.inf) for r in history), default=-math.inf)

    names = list(model.output.keys())
    train_ds = SegmentationDataset(x_train, y_train, cfg.batch_size, names, augment=True, shuffle=True,
                                   seed=cfg.seed, flip_prob=cfg.flip_prob, max_rotation=cfg.max_rotation)
    train_ds.set_epoch(initial_epoch)
    val_ds = SegmentationDataset(x_val, y_val, cfg.batch_size, names)
    callbacks = [
        keras.callbacks.LearningRateScheduler(step_schedule(cfg.learning_rate, cfg.lr_step_epochs, cfg.lr_factor)),
        RunRecorder(run_dir, monitor, best, export=inference_model),
    ]
    if initial_epoch < cfg.epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=1 if progress else 0)
    plot_history(history_csv, os.path.join(run_dir, "training_curves.png"))

    best_model = keras.models.load_model(os.path.join(run_dir, "best.keras"), compile=False)
    probs = predict_masks(best_model, x_val, batch_size=max(1, min(cfg.batch_size, 16)))
    per_image = [seg_scores(t[..., 0] > 0, p > 0.5) for t, p in zip(y_val, probs)]
    rows = read_history(history_csv)
    best_row = max(rows, key=lambda r: r.get(monitor, -math.inf))
    metrics = {
        "val": mean_scores(per_image),
        "val_images": len(x_val),
        "note": "validation scores of best.keras at the training resolution; seg-eval scores at original size",
        "best_epoch": int(best_row["epoch"]),
        "epochs_run": len(rows),
        "first_epoch_val_dice": rows[0].get(monitor),
        "train_minutes": round(sum(r.get("seconds", 0.0) for r in rows) / 60, 2),
        "arch": cfg.arch,
        "encoder": cfg.encoder,
        "backend": keras.backend.backend(),
        **model_size(best_model),
    }
    runs.write_json(os.path.join(run_dir, "metrics.json"), metrics)
    return run_dir


def seg_builder_kwargs(cfg):
    """Builder keyword arguments of `cfg.arch` taken from a `SegTrainConfig`.

    Args:
        cfg: `SegTrainConfig`.
    """
    kwargs = {"image_size": cfg.image_size, "encoder": cfg.encoder, "weights": cfg.weights}
    if cfg.arch == "deep_unet":
        kwargs.update(aspp_rates=tuple(cfg.aspp_rates), aspp_filters=cfg.aspp_filters,
                      decoder_filters=tuple(cfg.decoder_filters))
    elif cfg.arch in ("unet", "unetpp"):
        kwargs.update(decoder_filters=tuple(cfg.decoder_filters))
    return kwargs


# ---------------------------------------------------------------- classification (paper 4.2, 5, 6.1)

SEGMENTED_SUBDIR = "segmented"


def dataset_classes(dataset):
    """Class names of a classification dataset in label order.

    Args:
        dataset: "ham10000" or "isic2019".
    """
    from skinkeras.data import ham10000, isic2019

    tables = {"ham10000": ham10000.CLASSES, "isic2019": isic2019.CLASSES}
    if dataset not in tables:
        raise ValueError(f"Unknown --dataset {dataset!r}; valid: {', '.join(tables)}")
    return tables[dataset]


def load_cls_records(cfg):
    """Loads the records of `cfg.dataset` with their segmented-image paths; returns (df, problems).

    Args:
        cfg: `ClsTrainConfig`.
    """
    from skinkeras.data.ham10000 import load_ham10000
    from skinkeras.data.isic2019 import load_isic2019

    dataset_classes(cfg.dataset)
    loader = load_ham10000 if cfg.dataset == "ham10000" else load_isic2019
    df, problems = loader(cfg.data_dir, cfg.images)
    if needs_segmented(cfg):
        if not cfg.seg_dir:
            raise ValueError("This model needs segmented images: pass --seg-dir SEGDIR written by "
                             "`python cli.py segment --model SEG.keras --images IMAGES --out SEGDIR`")
        folder = os.path.join(cfg.seg_dir, SEGMENTED_SUBDIR)
        paths = [os.path.join(folder, f"{i}.jpg") for i in df.image_id]
        exists = np.array([os.path.exists(p) for p in paths], bool)
        if not exists.any():
            raise FileNotFoundError(f"No segmented images in {folder}; make them with `python cli.py segment "
                                    f"--model SEG.keras --images IMAGES --out {cfg.seg_dir}`")
        problems = list(problems) + [(p, "no segmented image (run `segment` on its folder)")
                                     for p, ok in zip(paths, exists) if not ok]
        df = df.assign(seg_path=paths)[exists].reset_index(drop=True)
    return df, problems


def needs_segmented(cfg):
    """Whether the configured model reads segmented images.

    Args:
        cfg: `ClsTrainConfig`.
    """
    return cfg.arch is None and cfg.variant != "original_only"


def build_classifier(cfg, num_classes, num_features):
    """Builds the configured TDBN variant or Table 2 baseline.

    Args:
        cfg: `ClsTrainConfig`.
        num_classes: number of classes.
        num_features: width of the metadata vector.
    """
    from skinkeras.models.cls_baselines import build_cls_baseline
    from skinkeras.models.tdbn import build_tdbn

    if cfg.arch:
        return build_cls_baseline(cfg.arch, num_classes, cfg.image_size, cfg.weights, dropout=cfg.dropout)
    return build_tdbn(num_classes, cfg.image_size, cfg.encoder, cfg.weights, cfg.variant, cfg.metadata_encoder,
                      num_features=num_features, num_heads=cfg.num_heads, key_dim=cfg.key_dim, dropout=cfg.dropout)


def compile_classifier(model, cfg, num_classes):
    """Cross-entropy, Adam with weight decay (paper 6.1), accuracy / balanced accuracy / top-2 metrics.

    Args:
        model: classifier with a softmax output.
        cfg: `ClsTrainConfig`.
        num_classes: number of classes.
    """
    from skinkeras.metrics import BalancedAccuracy

    set_batchnorm_momentum(model, cfg.bn_momentum)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate, weight_decay=cfg.weight_decay or None),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"), BalancedAccuracy(num_classes),
                 keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2_accuracy")],
    )
    return model


def model_input_names(model):
    """Names of a functional model's inputs.

    Args:
        model: keras model.
    """
    return [t.name for t in model.inputs]


def cls_arrays(df, encoder, size, input_names, progress=True):
    """Loads the images and metadata a classifier needs, for the rows of `df`.

    Args:
        df: records (image_path, seg_path when segmented images are needed, age, sex, site).
        encoder: fitted `MetadataEncoder`.
        size: (H, W).
        input_names: the model's input names.
        progress: show progress bars.

    Returns:
        (arrays dict, kept row positions, skipped [(path, reason)]).
    """
    from skinkeras.data.metadata import sample_availability
    from skinkeras.data.pipeline import load_image_rows

    kept = np.arange(len(df))
    arrays, skipped = {}, []
    for name, column in (("original", "image_path"), ("segmented", "seg_path")):
        if name in input_names:
            images, ok, bad = load_image_rows(list(df[column]), size, progress)
            full = np.zeros((len(df), *size, 3), np.uint8)
            full[ok] = images
            arrays[name] = full
            kept = np.intersect1d(kept, ok)
            skipped += bad
    features, avail = encoder.transform(df)
    arrays["metadata"] = features
    arrays["metadata_mask"] = sample_availability(avail)
    return arrays, kept, skipped


def train_classification(cfg, resume=False, resume_epochs=None, progress=True):
    """Trains a TDBN variant or baseline classifier and writes its run folder; returns the folder.

    Writes config.json, env.json, classes.json, metadata_encoder.json, split.csv
    (train / val / test, lesion-grouped by default), skipped.csv,
    class_distribution.png (before / after balancing), last.keras, best.keras
    (best validation balanced accuracy, no optimizer state), history.csv,
    training_curves.png and metrics.json (validation scores of best.keras).

    Args:
        cfg: `ClsTrainConfig`.
        resume: continue the run in `cfg.out` from its last.keras with its saved config and split.
        resume_epochs: with resume, the new total number of epochs.
        progress: show progress bars.
    """
    from skinkeras.data import classification as cls_data
    from skinkeras.data.metadata import MetadataEncoder
    from skinkeras.data.pipeline import ClassificationDataset
    from skinkeras.metrics import classification_scores

    run_dir, cfg = open_run(cfg, "cls-train", resume, resume_epochs)
    classes = dataset_classes(cfg.dataset)
    runs.write_json(os.path.join(run_dir, "classes.json"), {"dataset": cfg.dataset, "classes": list(classes)})

    df, problems = load_cls_records(cfg)
    split_csv = os.path.join(run_dir, "split.csv")
    if resume and os.path.exists(split_csv):
        df, more = cls_data.apply_split(df, cls_data.read_split(split_csv))
        problems = list(problems) + list(more)
    else:
        if cfg.limit:
            df = df.iloc[np.sort(np.random.default_rng(cfg.seed).permutation(len(df))[: cfg.limit])]
            df = df.reset_index(drop=True)
        df = cls_data.split_records(df, tuple(cfg.fractions), by=cfg.split, seed=cfg.seed)
        cls_data.write_split(df, split_csv)
        runs.write_skipped(run_dir, problems)

    encoder = MetadataEncoder().fit(df[df.subset == "train"])
    runs.write_json(os.path.join(run_dir, "metadata_encoder.json"), encoder.to_dict())
    history_csv = os.path.join(run_dir, "history.csv")
    model, history = restore_or_build(
        run_dir, resume, cfg,
        lambda: compile_classifier(build_classifier(cfg, len(classes), encoder.n_features), cfg, len(classes)))
    names = model_input_names(model)

    size = (cfg.image_size, cfg.image_size)
    if progress:
        print(f"Loading {len(df)} images at {size[0]}x{size[1]} ({', '.join(names)})")
    arrays, kept, skipped = cls_arrays(df, encoder, size, names, progress)
    if not resume:
        runs.write_skipped(run_dir, skipped)
    labels = df.label.to_numpy(np.int64)
    subset = df.subset.to_numpy()
    train_idx = np.intersect1d(kept, np.flatnonzero(subset == "train"))
    val_idx = np.intersect1d(kept, np.flatnonzero(subset == "val"))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"Empty training or validation split ({len(train_idx)} / {len(val_idx)} images)")

    def plan(epoch):
        if not cfg.balance:
            return train_idx
        positions, _ = cls_data.balance_plan(labels[train_idx], cfg.balance_cap, cfg.balance_floor,
                                             seed=cfg.seed + epoch)
        return train_idx[positions]

    cls_data.plot_class_distribution(cls_data.class_counts(labels[train_idx], len(classes)),
                                     cls_data.class_counts(labels[plan(0)], len(classes)), classes,
                                     os.path.join(run_dir, "class_distribution.png"),
                                     title=f"{cfg.dataset} training split before / after balancing")
    train_ds = ClassificationDataset(arrays, labels, names, cfg.batch_size, augment=True, shuffle=True, plan=plan,
                                     seed=cfg.seed, flip_prob=cfg.flip_prob, max_rotation=cfg.max_rotation)
    train_ds.set_epoch(len(history))
    val_ds = ClassificationDataset(arrays, labels, names, cfg.batch_size, plan=lambda epoch: val_idx)
    monitor = "val_balanced_accuracy"
    best = max((r.get(monitor, -math.inf) for r in history), default=-math.inf)
    callbacks = [
        keras.callbacks.LearningRateScheduler(step_schedule(cfg.learning_rate, cfg.lr_step_epochs, cfg.lr_factor)),
        # best.keras without optimizer state: an uncompiled functional copy sharing the layers.
        RunRecorder(run_dir, monitor, best, export=lambda m: keras.Model(m.input, m.output, name=m.name)),
    ]
    if len(history) < cfg.epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=len(history),
                  callbacks=callbacks, verbose=1 if progress else 0)
    plot_history(history_csv, os.path.join(run_dir, "training_curves.png"), metric="accuracy")

    best_model = keras.models.load_model(os.path.join(run_dir, "best.keras"), compile=False)
    probs = best_model.predict(ClassificationDataset(arrays, labels, names, cfg.batch_size,
                                                     plan=lambda epoch: val_idx), verbose=0)
    rows = read_history(history_csv)
    best_row = max(rows, key=lambda r: r.get(monitor, -math.inf))
    metrics = {
        "val": classification_scores(labels[val_idx], probs, classes),
        "best_epoch": int(best_row["epoch"]),
        "epochs_run": len(rows),
        "train_minutes": round(sum(r.get("seconds", 0.0) for r in rows) / 60, 2),
        "model": cfg.arch or cfg.variant,
        "split": cfg.split,
        "subset_images": {s: int(np.isin(np.flatnonzero(subset == s), kept).sum()) for s in ("train", "val", "test")},
        "backend": keras.backend.backend(),
        **model_size(best_model),
    }
    runs.write_json(os.path.join(run_dir, "metrics.json"), metrics)
    return run_dir
