"""ISIC 2018 Task 1 lesion segmentation pairs, and any images/ + masks/ folder pair (ISIC 2017, PH2, HAM10000)."""

import os
import re
from dataclasses import dataclass

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Official ISIC 2018 Task 1 folders per subset: (inputs, ground truth).
OFFICIAL_FOLDERS = {
    "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    "val": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
    "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
}
# Mask name = image stem + one of these (ISIC: _segmentation, PH2: _lesion).
MASK_SUFFIXES = ("_segmentation", "_Segmentation", "_lesion", "_mask", "")
ISIC_ID = re.compile(r"ISIC_\d{7}")


@dataclass(frozen=True)
class Pair:
    """One image and its lesion mask (mask_path is None where no mask exists).

    Args:
        image_id: image file stem (the ISIC id for ISIC data).
        image_path: path of the image.
        mask_path: path of the mask, or None.
    """

    image_id: str
    image_path: str
    mask_path: str | None


def list_images(folder):
    """Returns the sorted image files of `folder` (official ISIC folders also hold a LICENSE / attribution file).

    Args:
        folder: directory to scan (not recursive).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Image folder not found: {folder}")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
    return [os.path.join(folder, n) for n in names]


def mask_key(stem):
    """Strips the mask suffix from a mask file stem, giving the image stem it belongs to.

    Args:
        stem: mask file name without extension.
    """
    for suffix in MASK_SUFFIXES[:-1]:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def official_dirs(data_dir, subset="train"):
    """Returns (images_dir, masks_dir) of an ISIC 2018 Task 1 folder, or raises naming the expected layout.

    Args:
        data_dir: the folder holding the official ISIC2018_Task1* folders.
        subset: "train", "val" or "test".
    """
    if subset not in OFFICIAL_FOLDERS:
        raise ValueError(f"Unknown subset {subset!r}; valid: {', '.join(OFFICIAL_FOLDERS)}")
    images, masks = (os.path.join(data_dir, f) for f in OFFICIAL_FOLDERS[subset])
    if not os.path.isdir(images):
        raise FileNotFoundError(
            f"{data_dir}: no {OFFICIAL_FOLDERS[subset][0]}/ folder (ISIC 2018 Task 1 layout); "
            "for other layouts pass --images DIR --masks DIR"
        )
    return images, masks


def find_pairs(data_dir=None, images=None, masks=None, subset="train", require_masks=True, select=None):
    """Pairs images with their lesion masks by id.

    Either `data_dir` in the ISIC 2018 Task 1 layout, or `images` (+ `masks`)
    folders: mask `X_segmentation.png` (ISIC), `X_lesion.png` (PH2),
    `X_mask.png` or `X.png` belongs to image `X.*`.

    Args:
        data_dir: folder in the official ISIC 2018 Task 1 layout.
        images: plain image folder (instead of data_dir).
        masks: plain mask folder (with images).
        subset: official subset when data_dir is given: "train", "val" or "test".
        require_masks: images without a mask are reported as problems (else kept with mask_path None).
        select: keep only the images whose file stem it accepts (e.g. ISIC 2017's exact ids: its superpixel
            PNGs share the image folder and are no images).

    Returns:
        (pairs, problems): the list of `Pair` sorted by id, and a list of
        (path, reason) for images left out.
    """
    if data_dir is not None:
        images, masks = official_dirs(data_dir, subset)
    if images is None:
        raise ValueError("Give --data-dir DIR (ISIC 2018 layout) or --images DIR [--masks DIR]")
    image_files = [p for p in list_images(images)
                   if select is None or select(os.path.splitext(os.path.basename(p))[0])]
    if not image_files:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {images}")
    mask_index = {}
    if masks is not None:
        if not os.path.isdir(masks):
            raise FileNotFoundError(f"Mask folder not found: {masks}")
        for path in list_images(masks):
            mask_index.setdefault(mask_key(os.path.splitext(os.path.basename(path))[0]), path)
    elif require_masks:
        raise ValueError(f"No mask folder given for {images}; pass --masks DIR")

    pairs, problems = [], []
    for path in image_files:
        stem = os.path.splitext(os.path.basename(path))[0]
        mask_path = mask_index.get(stem)
        if mask_path is None and require_masks:
            problems.append((path, f"no mask for {stem} in {masks} (expected {stem}_segmentation.png)"))
            continue
        pairs.append(Pair(stem, path, mask_path))
    if require_masks and not pairs:
        raise ValueError(f"No image in {images} has a mask in {masks} (expected ID_segmentation.png names)")
    return pairs, problems


def limit_pairs(pairs, limit=None, seed=0):
    """Returns the first `limit` pairs of a seeded shuffle (all of them, shuffled, if limit is None).

    Args:
        pairs: list of `Pair`.
        limit: number of pairs to keep.
        seed: shuffle seed.
    """
    order = np.random.default_rng(seed).permutation(len(pairs))
    chosen = [pairs[i] for i in order]
    return chosen[:limit] if limit else chosen


def split_pairs(pairs, val_fraction=0.2, seed=0):
    """Seeded random train / validation split (paper 4.1.2: 80/20).

    Args:
        pairs: list of `Pair`.
        val_fraction: share of the validation set.
        seed: split seed.
    """
    if len(pairs) < 2:
        raise ValueError(f"Need at least 2 image/mask pairs to split, got {len(pairs)}")
    order = np.random.default_rng(seed + 1).permutation(len(pairs))
    n_val = min(len(pairs) - 1, max(1, int(round(len(pairs) * val_fraction))))
    val = sorted((pairs[i] for i in order[:n_val]), key=lambda p: p.image_id)
    train = sorted((pairs[i] for i in order[n_val:]), key=lambda p: p.image_id)
    return train, val
