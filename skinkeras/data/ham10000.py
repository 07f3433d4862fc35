"""HAM10000 classification records: `HAM10000_metadata.csv` + images in the official part folders.

Labels index `CLASSES`, the seven HAM10000 diagnoses in alphabetical order (the order of the
official metadata and of most published confusion matrices): akiec, bcc, bkl, df, mel, nv, vasc.
Sites are mapped to the unified vocabulary of `skinkeras.data.metadata`.
"""

from __future__ import annotations

import os

import pandas as pd

from skinkeras.data.classification import as_folder_list, attach_images, drop_duplicate_ids, finish_records
from skinkeras.data.metadata import record_metadata

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
METADATA_CSV = "HAM10000_metadata.csv"
# Official archive: two part folders; many copies (and the shared data) merge them into one.
IMAGE_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images")
# Ground-truth lesion masks of all HAM10000 images (Tschandl et al., 2020), ID_segmentation.png.
MASK_FOLDER = "HAM10000_segmentations_lesion_tschandl"
REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx", "age", "sex", "localization")


def read_ham10000_table(metadata_csv):
    """Parses `HAM10000_metadata.csv` into records without image paths.

    Args:
        metadata_csv: path of the metadata CSV.

    Returns:
        (df, problems): records (`image_id`, `lesion_id`, `label`, `dx`, `age`, `sex`, `site`,
        plus `dx_type` and the original `localization`), and [(image_id, reason)] for rows left out.
    """
    metadata_csv = os.fspath(metadata_csv)
    if not os.path.isfile(metadata_csv):
        raise FileNotFoundError(f"HAM10000 metadata not found: {metadata_csv}")
    raw = pd.read_csv(metadata_csv, dtype=str, keep_default_na=False)
    raw.columns = [c.strip() for c in raw.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{metadata_csv}: missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}")
    raw = raw.apply(lambda col: col.str.strip())
    dx = raw["dx"].str.lower()
    unknown = sorted(set(dx) - set(CLASSES))
    if unknown:
        raise ValueError(f"Unknown HAM10000 dx value(s) {unknown} in {metadata_csv}; valid: {', '.join(CLASSES)}")
    ages, sexes, sites, notes = record_metadata(raw["image_id"], raw["age"], raw["sex"], raw["localization"],
                                                metadata_csv)
    df = pd.DataFrame({
        "image_id": raw["image_id"],
        "lesion_id": raw["lesion_id"],
        "label": dx.map({c: i for i, c in enumerate(CLASSES)}),
        "dx": dx,
        "age": ages,
        "sex": sexes,
        "site": sites,
        "dx_type": raw["dx_type"] if "dx_type" in raw.columns else "",
        "localization": raw["localization"],
    })
    df, problems = drop_duplicate_ids(df, metadata_csv)
    return finish_records(df), list(problems) + notes


def find_image_folders(data_dir=None, images=None):
    """Returns the existing HAM10000 image folders: `images` if given, else the official ones under data_dir.

    Args:
        data_dir: HAM10000 folder.
        images: image folder or list of folders (instead of the official ones).
    """
    if images is not None:
        folders = as_folder_list(images)
        absent = [f for f in folders if not os.path.isdir(f)]
        if absent:
            raise FileNotFoundError(f"HAM10000 image folder not found: {', '.join(absent)}")
        return folders
    if data_dir is None:
        raise ValueError("Give data_dir (HAM10000 folder) or images (image folder(s))")
    folders = [os.path.join(data_dir, f) for f in IMAGE_FOLDERS if os.path.isdir(os.path.join(data_dir, f))]
    if not folders:
        raise FileNotFoundError(f"{data_dir}: no HAM10000 image folder ({'/, '.join(IMAGE_FOLDERS)}/); "
                                "pass images=DIR")
    return folders


def load_ham10000(data_dir=None, images=None, metadata_csv=None):
    """Loads HAM10000 records with image paths; ids without an image are reported, not fatal.

    Args:
        data_dir: folder with `HAM10000_metadata.csv` and `HAM10000_images_part_1/`, `_part_2/`
            and/or `HAM10000_images/`.
        images: image folder(s) to search instead of the official ones (str or list).
        metadata_csv: metadata CSV instead of `data_dir/HAM10000_metadata.csv`.

    Returns:
        (df, problems): records with `RECORD_COLUMNS` (+ `dx_type`, `localization`), labels
        indexing `CLASSES`; problems as [(image_id, reason)].
    """
    if metadata_csv is None:
        if data_dir is None:
            raise ValueError("Give data_dir (HAM10000 folder) or metadata_csv")
        metadata_csv = os.path.join(data_dir, METADATA_CSV)
    df, problems = read_ham10000_table(metadata_csv)
    folders = find_image_folders(data_dir, images)
    df, missing = attach_images(df, folders)
    return finish_records(df), problems + missing


def ground_truth_segdir(data_dir, out, images=None):
    """Writes a SEGDIR of HAM10000 images times their own lesion masks (`MASK_FOLDER`).

    Args:
        data_dir: HAM10000 folder with `HAM10000_metadata.csv` and `MASK_FOLDER`.
        out: the SEGDIR to write.
        images: image folder(s) instead of the official ones.

    Returns:
        (the `SegDir`, skipped [(image_id, reason)]).
    """
    from skinkeras.data.segdir import write_ground_truth

    mask_folder = os.path.join(data_dir, MASK_FOLDER)
    if not os.path.isdir(mask_folder):
        raise FileNotFoundError(f"{mask_folder}: no HAM10000 lesion masks; download the masks (Tschandl et al.) there")
    records, _ = load_ham10000(data_dir, images)
    return write_ground_truth(out, records, mask_folder)
