"""Classification records: which dataset, which images, which segmented twins, which split subset."""

import dataclasses
import os

import numpy as np
import pandas as pd

from skinkeras import runs
from skinkeras.data import classification as cls_data
from skinkeras.data.segdir import SegDir
from skinkeras.data.sets import classification_records, dataset_classes

OFFICIAL_COLUMNS = {
    # ISIC challenge CSV column -> our class name, in the official order (ISIC 2018 Task 3 for HAM10000, 2019).
    "ham10000": {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"},
    "isic2019": {c: c for c in ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")},
}


def attach_segmented(df, seg_dir, problems=()):
    """Adds `seg_path` (the SEGDIR's segmented image) to each record, dropping records that have none.

    Args:
        df: records with image_id.
        seg_dir: folder written by `segment`.
        problems: [(path, reason)] found so far.

    Returns:
        (records with seg_path, problems + the records without a segmented image).
    """
    if not seg_dir:
        raise ValueError("This model needs segmented images: pass --seg-dir SEGDIR written by "
                         "`python cli.py segment --model SEG.keras --images IMAGES --out SEGDIR`")
    layout = SegDir(seg_dir)
    paths = [layout.segmented_path(i) for i in df.image_id]
    exists = np.array([os.path.exists(p) for p in paths], bool)
    if len(df) and not exists.any():
        raise FileNotFoundError(f"No segmented images of these {len(df)} records in {layout.segmented_folder}; "
                                f"make them with `python cli.py segment --model SEG.keras --images IMAGES "
                                f"--out {seg_dir}`")
    problems = list(problems) + [(p, "no segmented image (run `segment` on its folder)")
                                 for p, ok in zip(paths, exists) if not ok]
    return df.assign(seg_path=paths)[exists].reset_index(drop=True), problems


def sources_absent(cfg):
    """Whether none of a config's dataset folders exists here (e.g. only the input cache was copied).

    Args:
        cfg: a config with data_dir and images.
    """
    folders = [cfg.data_dir, *cls_data.as_folder_list(cfg.images)]
    return not any(f and os.path.isdir(f) for f in folders)


def load_cls_records(cfg, needs_segmented):
    """Loads the records of `cfg.dataset`, with their segmented-image paths when the model needs them.

    With an input cache (`cfg.cache`) and no dataset folder here, the records are the cache's own (see
    `skinkeras.data.cache`), said in one printed line.

    Args:
        cfg: `ClsTrainConfig` (dataset, data_dir, images, seg_dir, cache).
        needs_segmented: whether the model reads segmented images.

    Returns:
        (records DataFrame, problems [(path, reason)]).
    """
    dataset_classes(cfg.dataset)
    if getattr(cfg, "cache", None) and sources_absent(cfg):
        from skinkeras.data.cache import open_cache

        cache = open_cache(cfg.cache)
        df = cache.records(segmented=needs_segmented)
        print(f"The {cfg.dataset} files are absent here ({cfg.data_dir or cfg.images or 'no --data-dir'}): "
              f"trusting the records of the cache {cache.path} ({len(df)} images, their labels and metadata)")
        return df, []
    df, problems = classification_records(cfg.dataset, cfg.data_dir, cfg.images)
    if df.empty:
        raise ValueError(f"No usable {cfg.dataset} records in {cfg.data_dir or cfg.images} "
                         f"({len(problems)} rows left out); check its metadata CSV")
    if needs_segmented:
        df, problems = attach_segmented(df, cfg.seg_dir, problems)
    return df, problems


def split_subset(cfg, run_dir, needs_segmented, subset="test", data_dir=None, images=None, seg_dir=None):
    """Labelled records of a run's split subset, or of all images of another dataset folder.

    Args:
        cfg: the run's `ClsTrainConfig`.
        run_dir: the run folder (its split.csv).
        needs_segmented: whether the model reads segmented images.
        subset: train, val or test.
        data_dir: another dataset folder (all its images) instead of the split.
        images: image folder(s) of that dataset.
        seg_dir: segmented images of that dataset (default: the run's).

    Returns:
        (records DataFrame, problems [(path, reason)], description of the source).
    """
    if data_dir or images:
        cfg = dataclasses.replace(cfg, data_dir=data_dir, images=images, seg_dir=seg_dir or cfg.seg_dir)
        df, problems = load_cls_records(cfg, needs_segmented)
        return df, problems, f"all images of {data_dir or images}"
    if subset not in cls_data.SUBSETS:
        raise ValueError(f"Unknown subset {subset!r}; valid: {', '.join(cls_data.SUBSETS)}")
    if seg_dir:
        cfg = dataclasses.replace(cfg, seg_dir=seg_dir)
    df, problems = load_cls_records(cfg, needs_segmented)
    df, more = cls_data.apply_split(df, cls_data.read_split(os.path.join(run_dir, runs.SPLIT_CSV)))
    df = df[df.subset == subset].reset_index(drop=True)
    return df, list(problems) + list(more), f"the {subset} split of {run_dir}"


def folder_records(images, seg_dir=None):
    """Unlabelled records of every image in a folder (no metadata: availability 0).

    Args:
        images: image folder.
        seg_dir: folder written by `segment`, or None.
    """
    from skinkeras.data.isic2018 import list_images

    paths = list_images(images)
    if not paths:
        raise FileNotFoundError(f"No images in {images}")
    ids = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    df = pd.DataFrame({"image_id": ids, "image_path": paths, "label": -1, "age": np.nan, "sex": None, "site": None})
    if seg_dir:
        df["seg_path"] = [SegDir(seg_dir).segmented_path(i) for i in ids]
    return df
