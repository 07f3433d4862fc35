"""ISIC 2019 classification records: ground-truth + metadata CSVs + `ISIC_2019_Training_Input/` images.

Labels index `CLASSES`, the eight training diagnoses in the column order of the official
ground-truth file. UNK (no training image carries it) is not a class: a row whose one-hot is UNK,
all zeros or several classes is reported and left out. Sites keep their ISIC names, which are
the unified vocabulary of `skinkeras.data.metadata`.

`ISIC2019_TO_HAM10000` / `HAM10000_TO_ISIC2019` relate the two label sets (SCC has no HAM10000
class; AKIEC of HAM10000 is AK here), for cross-dataset evaluation.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from skinkeras.data.classification import as_folder_list, attach_images, drop_duplicate_ids, finish_records
from skinkeras.data.metadata import record_metadata

CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
GROUND_TRUTH_CSV = "ISIC_2019_Training_GroundTruth.csv"
METADATA_CSV = "ISIC_2019_Training_Metadata.csv"
IMAGE_FOLDER = "ISIC_2019_Training_Input"
METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")

ISIC2019_TO_HAM10000 = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "BKL": "bkl",
                        "DF": "df", "VASC": "vasc", "SCC": None}
HAM10000_TO_ISIC2019 = {v: k for k, v in ISIC2019_TO_HAM10000.items() if v is not None}


def _read(path, what):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ISIC 2019 {what} not found: {path}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.columns = [c.strip() for c in df.columns]
    return df.apply(lambda col: col.str.strip()), path


def read_isic2019_tables(gt_csv, meta_csv=None, problems=None):
    """Parses the ground-truth and metadata CSVs into records without image paths (no images needed).

    Args:
        gt_csv: `ISIC_2019_Training_GroundTruth.csv` (image + one-hot MEL..SCC, UNK).
        meta_csv: `ISIC_2019_Training_Metadata.csv` (image, age_approx, anatom_site_general,
            lesion_id, sex; empty cells are missing), or None for no metadata.
        problems: optional list that receives (image_id, reason) for each row left out.

    Returns:
        records (`image_id`, `lesion_id`, `label`, `dx`, `age`, `sex`, `site`) in ground-truth order.
    """
    problems = [] if problems is None else problems
    gt, gt_csv = _read(gt_csv, "ground truth")
    missing = [c for c in ("image",) + CLASSES if c not in gt.columns]
    if missing:
        raise ValueError(f"{gt_csv}: missing column(s) {missing}; expected image, {', '.join(CLASSES)}, UNK")
    try:
        onehot = gt[list(CLASSES)].replace("", "0").astype(float).to_numpy() >= 0.5
        unk = gt["UNK"].replace("", "0").astype(float).to_numpy() >= 0.5 if "UNK" in gt.columns else None
    except ValueError as err:
        raise ValueError(f"{gt_csv}: non-numeric label cell ({err})") from None
    n_pos = onehot.sum(axis=1)
    ok = n_pos == 1
    for i in np.flatnonzero(~ok):
        if unk is not None and unk[i] and n_pos[i] == 0:
            reason = "label UNK (not a training class)"
        elif n_pos[i] == 0:
            reason = "no positive label"
        else:
            reason = f"several positive labels {[c for c, p in zip(CLASSES, onehot[i]) if p]}"
        problems.append((gt["image"].iat[i], f"{reason} in {gt_csv}"))
    label = onehot.argmax(axis=1)
    df = pd.DataFrame({"image_id": gt["image"], "label": label, "dx": np.array(CLASSES)[label]}).loc[ok]
    df, dups = drop_duplicate_ids(df, gt_csv)
    problems.extend(dups)

    if meta_csv is not None:
        meta, meta_csv = _read(meta_csv, "metadata")
        absent = [c for c in METADATA_COLUMNS if c not in meta.columns]
        if absent:
            raise ValueError(f"{meta_csv}: missing column(s) {absent}; expected {list(METADATA_COLUMNS)}")
        meta = meta.drop_duplicates("image").set_index("image")
        meta = meta.reindex(df["image_id"]).fillna("")  # images without a metadata row: all missing
    else:
        meta = pd.DataFrame("", index=df["image_id"], columns=list(METADATA_COLUMNS[1:]))
    df["lesion_id"] = meta["lesion_id"].to_numpy()
    df["age"], df["sex"], df["site"], notes = record_metadata(df["image_id"], meta["age_approx"], meta["sex"],
                                                              meta["anatom_site_general"], meta_csv)
    problems.extend(notes)
    return finish_records(df)


def find_image_folders(data_dir=None, images=None):
    """Returns the ISIC 2019 image folder(s), raising one line naming a folder that does not exist.

    Args:
        data_dir: ISIC 2019 folder (images in `ISIC_2019_Training_Input/`).
        images: image folder or list of folders instead.
    """
    folders = as_folder_list(images)
    if not folders:
        if data_dir is None:
            raise ValueError("Give data_dir (ISIC 2019 folder) or images (image folder(s))")
        folders = [os.path.join(data_dir, IMAGE_FOLDER)]
    absent = [f for f in folders if not os.path.isdir(f)]
    if absent:
        raise FileNotFoundError(f"ISIC 2019 image folder not found: {', '.join(absent)}; pass images=DIR")
    return folders


def load_isic2019(data_dir=None, images=None, ground_truth_csv=None, metadata_csv=None):
    """Loads ISIC 2019 training records with image paths; ids without an image are reported, not fatal.

    Args:
        data_dir: folder with the two official CSVs and `ISIC_2019_Training_Input/`.
        images: image folder(s) instead of `ISIC_2019_Training_Input/` (str or list; e.g. add
            the HAM10000 image folder, whose ids ISIC 2019 contains).
        ground_truth_csv: ground-truth CSV instead of `data_dir/ISIC_2019_Training_GroundTruth.csv`.
        metadata_csv: metadata CSV instead of `data_dir/ISIC_2019_Training_Metadata.csv`.

    Returns:
        (df, problems): records with `RECORD_COLUMNS`, labels indexing `CLASSES`; problems as
        [(image_id, reason)] (UNK / unlabelled rows, duplicates, missing images).
    """
    if ground_truth_csv is None or metadata_csv is None:
        if data_dir is None:
            raise ValueError("Give data_dir (ISIC 2019 folder) or ground_truth_csv and metadata_csv")
        ground_truth_csv = ground_truth_csv or os.path.join(data_dir, GROUND_TRUTH_CSV)
        metadata_csv = metadata_csv or os.path.join(data_dir, METADATA_CSV)
    # Folders first: a missing image folder should fail before parsing 25k rows.
    folders = find_image_folders(data_dir, images)
    problems = []
    df = read_isic2019_tables(ground_truth_csv, metadata_csv, problems)
    df, missing = attach_images(df, folders)
    return finish_records(df), problems + missing
