"""ISIC 2017 (Codella et al., 2018): lesion masks (Part 1) and melanoma / seborrheic keratosis labels (Part 3).

Official layout, per subset (`Training`, `Validation`, `Test_v2`; a plain `Test` is accepted too)::

    DATA_DIR/ISIC-2017_Training_Data/ISIC_0000000.jpg
    DATA_DIR/ISIC-2017_Training_Data/ISIC_0000000_superpixels.png     (Part 2 input, not used)
    DATA_DIR/ISIC-2017_Training_Data/ISIC-2017_Training_Data_metadata.csv   image_id, age_approximate, sex
    DATA_DIR/ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png
    DATA_DIR/ISIC-2017_Training_Part3_GroundTruth.csv                 image_id, melanoma, seborrheic_keratosis

An archive unpacked into a folder of its own name (`ISIC-2017_Training_Data/ISIC-2017_Training_Data/`)
is found as well. Labels: melanoma = 1 is "melanoma", seborrheic_keratosis = 1 is
"seborrheic_keratosis", neither is "nevus" (the challenge's third class); both = 1 is reported.

`HAM10000_MAP` gives the HAM10000 class that counts as correct for a HAM10000-trained classifier:
melanoma "mel", seborrheic keratosis "bkl" (HAM10000's benign keratosis class holds the seborrheic
keratoses), nevus "nv". Age and sex come from the metadata CSV ("unknown" is missing); ISIC 2017
has no site, so site stays missing.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from skinkeras.data.classification import drop_duplicate_ids, finish_records
from skinkeras.data.isic2018 import ISIC_ID, IMAGE_EXTENSIONS, find_pairs
from skinkeras.data.metadata import record_metadata

CLASSES = ("melanoma", "seborrheic_keratosis", "nevus")
# HAM10000 class a prediction must be to count as correct on ISIC 2017 (see the module docstring).
HAM10000_MAP = {"melanoma": "mel", "seborrheic_keratosis": "bkl", "nevus": "nv"}
# Subset -> official name part; the test set was released as "Test_v2", some copies drop the "_v2".
SUBSET_NAMES = {"train": ("Training",), "val": ("Validation",), "test": ("Test_v2", "Test")}
LABEL_COLUMNS = ("image_id", "melanoma", "seborrheic_keratosis")
METADATA_COLUMNS = ("image_id", "age_approximate", "sex")


def _name(subset):
    if subset not in SUBSET_NAMES:
        raise ValueError(f"Unknown subset {subset!r}; valid: {', '.join(SUBSET_NAMES)}")
    return SUBSET_NAMES[subset]


def _unnest(folder):
    # Unzipping ISIC-2017_X.zip into a folder of the same name gives X/X/...
    inner = os.path.join(folder, os.path.basename(folder))
    return inner if os.path.isdir(inner) else folder


def official_paths(data_dir, subset="test"):
    """Returns the files of one ISIC 2017 subset, raising one line naming the expected folder.

    Args:
        data_dir: folder holding the official ISIC-2017_* folders and CSVs.
        subset: "train", "val" or "test".

    Returns:
        dict with `image_dir`, `mask_dir` (Part 1 folder, may not exist), `labels_csv` (Part 3,
        may not exist) and `metadata_csv` (may not exist).
    """
    names = _name(subset)
    data_dir = os.fspath(data_dir)
    for part in names:
        images = os.path.join(data_dir, f"ISIC-2017_{part}_Data")
        if os.path.isdir(images):
            break
    else:
        expected = " or ".join(f"ISIC-2017_{p}_Data/" for p in names)
        raise FileNotFoundError(f"{data_dir}: no {expected} folder (ISIC 2017 layout, subset {subset})")
    images = _unnest(images)

    def first(candidates):
        return next((c for c in candidates if os.path.exists(c)), candidates[0])

    masks = first([os.path.join(data_dir, f"ISIC-2017_{p}_Part1_GroundTruth") for p in names])
    labels = first([os.path.join(data_dir, f"ISIC-2017_{p}_Part3_GroundTruth.csv") for p in names])
    metadata = first([os.path.join(images, f"ISIC-2017_{p}_Data_metadata.csv") for p in names]
                     + [os.path.join(data_dir, f"ISIC-2017_{p}_Data_metadata.csv") for p in names])
    return {"image_dir": images, "mask_dir": _unnest(masks) if os.path.isdir(masks) else masks,
            "labels_csv": labels, "metadata_csv": metadata}


def index_images(folder):
    """Maps ISIC id -> image path in `folder`; the superpixel PNGs and any non-ISIC file are not images.

    Args:
        folder: an ISIC-2017_*_Data folder.
    """
    index = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        # Only an exact ISIC_1234567 stem: ISIC_1234567_superpixels.png shares the folder and the id.
        if ext.lower() in IMAGE_EXTENSIONS and ISIC_ID.fullmatch(stem):
            index.setdefault(stem, os.path.join(folder, name))
    return index


def _read_csv(path):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.columns = [c.strip() for c in df.columns]
    return df.apply(lambda col: col.str.strip())


def read_isic2017_labels(labels_csv):
    """Parses a Part 3 ground-truth CSV into (image_id, diagnosis) rows.

    Args:
        labels_csv: `ISIC-2017_*_Part3_GroundTruth.csv` (image_id, melanoma, seborrheic_keratosis).

    Returns:
        (df, problems): DataFrame with `image_id` and `diagnosis` (a name of `CLASSES`), and
        [(image_id, reason)] for rows left out (non-numeric cells, both labels set, duplicates).
    """
    labels_csv = os.fspath(labels_csv)
    if not os.path.isfile(labels_csv):
        raise FileNotFoundError(f"ISIC 2017 ground truth not found: {labels_csv} "
                                "(the official ISIC-2017_*_Part3_GroundTruth.csv)")
    raw = _read_csv(labels_csv)
    missing = [c for c in LABEL_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{labels_csv}: missing column(s) {missing}; expected {', '.join(LABEL_COLUMNS)}")
    ids, diagnoses, problems = [], [], []
    for line, (image_id, mel, sk) in enumerate(zip(raw["image_id"], raw["melanoma"], raw["seborrheic_keratosis"]),
                                               start=2):
        try:
            is_mel, is_sk = float(mel) >= 0.5, float(sk) >= 0.5
        except ValueError:
            problems.append((image_id, f"{labels_csv} line {line}: non-numeric label "
                                       f"(melanoma={mel!r}, seborrheic_keratosis={sk!r}); row left out"))
            continue
        if is_mel and is_sk:
            problems.append((image_id, f"{labels_csv} line {line}: both melanoma and seborrheic_keratosis are 1; "
                                       "row left out"))
            continue
        ids.append(image_id)
        diagnoses.append("melanoma" if is_mel else "seborrheic_keratosis" if is_sk else "nevus")
    df = pd.DataFrame({"image_id": ids, "diagnosis": diagnoses}, dtype=object)
    df, dups = drop_duplicate_ids(df, labels_csv)
    return df, problems + list(dups)


def _metadata(ids, metadata_csv):
    """(ages, sexes, notes) for `ids`; all missing when the CSV is absent or lacks a column."""
    n = len(ids)
    if metadata_csv is None or not os.path.isfile(metadata_csv):
        return [math.nan] * n, [""] * n, []
    meta = _read_csv(metadata_csv)
    if "image_id" not in meta.columns:
        raise ValueError(f"{metadata_csv}: no image_id column; expected {', '.join(METADATA_COLUMNS)}")
    meta = meta.drop_duplicates("image_id").set_index("image_id").reindex(list(ids)).fillna("")
    ages = meta["age_approximate"] if "age_approximate" in meta.columns else [""] * n
    sexes = meta["sex"] if "sex" in meta.columns else [""] * n
    ages, sexes, _, notes = record_metadata(list(ids), list(ages), list(sexes), [""] * n, metadata_csv)
    return ages, sexes, notes


def load_isic2017(data_dir, subset="test"):
    """Loads the ISIC 2017 classification records of one subset; ids without an image are reported, not fatal.

    Args:
        data_dir: folder holding the official ISIC-2017_* folders and CSVs.
        subset: "train", "val" or "test".

    Returns:
        (df, problems): records with `RECORD_COLUMNS` plus `diagnosis` (a name of `CLASSES`);
        `label` indexes `CLASSES`, `dx` is the HAM10000 class of `HAM10000_MAP`, `lesion_id` the
        image id, age / sex from the metadata CSV where present (NaN / "" otherwise), site "".
        problems as [(image_id, reason)].
    """
    paths = official_paths(data_dir, subset)
    df, problems = read_isic2017_labels(paths["labels_csv"])
    index = index_images(paths["image_dir"])
    found = df["image_id"].map(index)
    ok = found.notna().to_numpy()
    problems += [(i, f"no image file for {i} in {paths['image_dir']}") for i in df.loc[~ok, "image_id"]]
    df = df.loc[ok].reset_index(drop=True)
    df["image_path"] = found[ok].astype(str).to_numpy()
    df["lesion_id"] = df["image_id"]
    df["label"] = df["diagnosis"].map(CLASSES.index).to_numpy(np.int64)
    df["dx"] = df["diagnosis"].map(HAM10000_MAP)
    df["age"], df["sex"], notes = _metadata(df["image_id"], paths["metadata_csv"])
    df["site"] = ""
    return finish_records(df), problems + notes


def isic2017_pairs(data_dir, subset="test"):
    """Image / lesion-mask pairs of one ISIC 2017 subset (Part 1), for segmentation evaluation.

    Args:
        data_dir: folder holding the official ISIC-2017_* folders.
        subset: "train", "val" or "test".

    Returns:
        (pairs, problems): `Pair`s sorted by id, and [(path, reason)] for images without a mask.
    """
    paths = official_paths(data_dir, subset)
    masks = paths["mask_dir"]
    if not os.path.isdir(masks):
        raise FileNotFoundError(f"{data_dir}: no {os.path.basename(masks)}/ folder (ISIC 2017 Part 1 masks, "
                                f"subset {subset})")
    return find_pairs(images=paths["image_dir"], masks=masks, select=ISIC_ID.fullmatch)
