"""Synthetic dermoscopy datasets written in the official ISIC 2018, HAM10000, ISIC 2019, PH2 and ISIC 2017 layouts.

The images are rendered with numpy, Pillow and scipy.ndimage only, so the data pipeline, the
tests and the demo can run without downloading the real archives. Lesion colour is modelled as
optical density of a few chromophores (epidermal melanin, dermal melanin, blood) over a skin
background, so every lesion is darker than the surrounding skin and each class has its own
shape, colour and texture. Metadata (age, sex, site) is drawn per class as well, so both a
segmenter and an image + metadata classifier have something real to learn.
"""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
PH2_CLASSES = ("common_nevus", "atypical_nevus", "melanoma")
ISIC2017_CLASSES = ("melanoma", "seborrheic_keratosis", "nevus")
# Position in DATASETS keys each dataset's random stream: new datasets go at the end, so the
# files of the existing ones stay byte-identical.
DATASETS = ("isic2018", "ham10000", "isic2019", "ph2", "isic2017")
# What `make_synthetic` writes unless told otherwise (the demo, the tests and their timings rely on it).
DEFAULT_DATASETS = ("isic2018", "ham10000", "isic2019")

HAM10000_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
ISIC2019_GT_COLUMNS = ("image",) + ISIC2019_CLASSES + ("UNK",)
ISIC2019_META_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")

HAM10000_LOCALIZATIONS = (
    "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
    "lower extremity", "neck", "scalp", "trunk", "upper extremity", "unknown",
)
ISIC2019_SITES = (
    "anterior torso", "head/neck", "lateral torso", "lower extremity", "oral/genital",
    "palms/soles", "posterior torso", "upper extremity",
)

# The real id ranges do not overlap either, so a caller may merge the three sets safely. The
# real ISIC 2017 ids lie inside ISIC 2018's; the synthetic ones get their own range instead, so
# that merging never pairs two unrelated synthetic images under one id.
_ID_START = {"isic2018": 0, "ham10000": 24306, "isic2019": 50000, "isic2017": 80000}
_MAX_N = 20000
_JPEG_QUALITY = 92

_ISIC2019_TO_LOOK = {
    "MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "BKL": "bkl",
    "DF": "df", "VASC": "vasc", "SCC": "scc",
}

# Class frequencies of the real sets (per image), used for everything beyond the
# guaranteed minimum of each class.
_HAM_FREQ = {"akiec": 0.033, "bcc": 0.051, "bkl": 0.110, "df": 0.012, "mel": 0.111,
             "nv": 0.669, "vasc": 0.014}
_ISIC2019_FREQ = {"MEL": 0.178, "NV": 0.508, "BCC": 0.131, "AK": 0.034, "BKL": 0.104,
                  "DF": 0.010, "VASC": 0.010, "SCC": 0.025}
# PH2: 80 common nevi, 80 atypical nevi, 40 melanomas. ISIC 2017 training: 1372 / 254 / 374.
_PH2_FREQ = {"common_nevus": 0.4, "atypical_nevus": 0.4, "melanoma": 0.2}
_ISIC2017_FREQ = {"melanoma": 0.187, "seborrheic_keratosis": 0.127, "nevus": 0.686}
_PH2_TO_LOOK = {"common_nevus": "nv", "atypical_nevus": "nv", "melanoma": "mel"}
_ISIC2017_TO_LOOK = {"melanoma": "mel", "seborrheic_keratosis": "bkl", "nevus": "nv"}
_ISIC2017_TO_ISIC2019 = {"melanoma": "MEL", "seborrheic_keratosis": "BKL", "nevus": "NV"}
# Task 1 has no labels; its lesions follow the mix of the ISIC archive it was drawn from.
_ISIC2018_FREQ = {"nv": 0.55, "mel": 0.2, "bkl": 0.12, "bcc": 0.05, "akiec": 0.03,
                  "df": 0.02, "vasc": 0.03}

# Images per lesion in HAM10000 (5514/1423/365/120/32/...): mean about 1.35.
_IMAGES_PER_LESION = np.array([0.74, 0.19, 0.05, 0.015, 0.004, 0.001])

# Optical densities per unit concentration, RGB: light through a lesion is skin * exp(-sum c*od).
_OD = {
    "epi": np.array([0.42, 0.78, 1.08], np.float32),     # epidermal melanin: brown
    "deep": np.array([0.98, 0.86, 0.62], np.float32),    # dermal melanin: blue-grey
    "blood": np.array([0.10, 0.95, 0.72], np.float32),   # oxy-haemoglobin: pink/red
    "purple": np.array([0.75, 1.75, 0.85], np.float32),  # lacunae: dark red-purple
}
_LAYERS = ("epi", "deep", "blood", "purple", "white")

# Shape of each class: area fraction, border irregularity (Fourier amplitude) and number of
# harmonics, aspect ratio, edge softness (in units of the lesion radius), fine border fuzz.
_SHAPE = {
    "nv":    dict(area=(0.10, 0.28), irreg=(0.02, 0.05), harm=4, aspect=(0.75, 1.0),
                  soft=(0.06, 0.14), fuzz=0.012),
    "mel":   dict(area=(0.22, 0.45), irreg=(0.10, 0.18), harm=10, aspect=(0.6, 1.0),
                  soft=(0.05, 0.18), fuzz=0.045),
    "bcc":   dict(area=(0.10, 0.30), irreg=(0.05, 0.11), harm=7, aspect=(0.65, 1.0),
                  soft=(0.10, 0.22), fuzz=0.03),
    "akiec": dict(area=(0.12, 0.35), irreg=(0.08, 0.15), harm=8, aspect=(0.6, 1.0),
                  soft=(0.20, 0.35), fuzz=0.05),
    "bkl":   dict(area=(0.12, 0.35), irreg=(0.05, 0.10), harm=6, aspect=(0.6, 1.0),
                  soft=(0.03, 0.08), fuzz=0.02),
    "df":    dict(area=(0.10, 0.16), irreg=(0.02, 0.05), harm=4, aspect=(0.8, 1.0),
                  soft=(0.15, 0.25), fuzz=0.015),
    "vasc":  dict(area=(0.10, 0.25), irreg=(0.03, 0.07), harm=5, aspect=(0.7, 1.0),
                  soft=(0.04, 0.10), fuzz=0.015),
    "scc":   dict(area=(0.12, 0.35), irreg=(0.06, 0.12), harm=6, aspect=(0.7, 1.0),
                  soft=(0.12, 0.25), fuzz=0.03),
}

# Metadata per HAM10000 class: age mean/sd, P(male), diagnosis confirmation, body site.
_HAM_META = {
    "akiec": dict(age=(67, 12), male=0.67, dx_type={"histo": 1.0},
                  loc={"face": 0.35, "upper extremity": 0.15, "lower extremity": 0.13,
                       "scalp": 0.08, "back": 0.1, "chest": 0.05, "neck": 0.05,
                       "hand": 0.04, "ear": 0.03, "trunk": 0.02}),
    "bcc": dict(age=(67, 12), male=0.62, dx_type={"histo": 1.0},
                loc={"back": 0.3, "face": 0.2, "lower extremity": 0.1, "trunk": 0.1,
                     "upper extremity": 0.1, "chest": 0.07, "neck": 0.04, "abdomen": 0.04,
                     "scalp": 0.03, "ear": 0.02}),
    "bkl": dict(age=(64, 13), male=0.55,
                dx_type={"histo": 0.5, "consensus": 0.38, "confocal": 0.07, "follow_up": 0.05},
                loc={"face": 0.3, "lower extremity": 0.15, "back": 0.15, "trunk": 0.12,
                     "upper extremity": 0.1, "chest": 0.06, "abdomen": 0.05, "scalp": 0.03,
                     "neck": 0.02, "unknown": 0.02}),
    "df": dict(age=(53, 15), male=0.48, dx_type={"histo": 0.5, "consensus": 0.5},
               loc={"lower extremity": 0.7, "upper extremity": 0.15, "trunk": 0.08,
                    "back": 0.04, "abdomen": 0.03}),
    "mel": dict(age=(62, 15), male=0.6, dx_type={"histo": 1.0},
                loc={"back": 0.3, "upper extremity": 0.17, "lower extremity": 0.18,
                     "face": 0.12, "trunk": 0.08, "chest": 0.06, "abdomen": 0.03,
                     "neck": 0.02, "scalp": 0.02, "foot": 0.01, "unknown": 0.01}),
    "nv": dict(age=(47, 15), male=0.5, dx_type={"follow_up": 0.55, "histo": 0.4, "consensus": 0.05},
               loc={"back": 0.25, "lower extremity": 0.22, "trunk": 0.16, "abdomen": 0.12,
                    "upper extremity": 0.1, "foot": 0.04, "chest": 0.03, "unknown": 0.03,
                    "face": 0.02, "neck": 0.01, "genital": 0.01, "hand": 0.01}),
    "vasc": dict(age=(52, 18), male=0.45, dx_type={"consensus": 0.6, "histo": 0.4},
                 loc={"trunk": 0.3, "lower extremity": 0.2, "face": 0.15, "abdomen": 0.1,
                      "back": 0.08, "upper extremity": 0.08, "chest": 0.05, "neck": 0.02,
                      "acral": 0.02}),
}

_ISIC2019_META = {
    "MEL": dict(age=(60, 16), male=0.58,
                site={"posterior torso": 0.28, "lower extremity": 0.2, "upper extremity": 0.17,
                      "anterior torso": 0.15, "head/neck": 0.14, "lateral torso": 0.03,
                      "palms/soles": 0.02, "oral/genital": 0.01}),
    "NV": dict(age=(42, 15), male=0.5,
               site={"posterior torso": 0.3, "anterior torso": 0.22, "lower extremity": 0.22,
                     "upper extremity": 0.12, "head/neck": 0.05, "lateral torso": 0.04,
                     "palms/soles": 0.04, "oral/genital": 0.01}),
    "BCC": dict(age=(67, 12), male=0.6,
                site={"head/neck": 0.35, "anterior torso": 0.2, "posterior torso": 0.2,
                      "upper extremity": 0.1, "lower extremity": 0.1, "lateral torso": 0.05}),
    "AK": dict(age=(70, 10), male=0.68,
               site={"head/neck": 0.65, "upper extremity": 0.15, "lower extremity": 0.1,
                     "anterior torso": 0.06, "posterior torso": 0.04}),
    "BKL": dict(age=(63, 13), male=0.53,
                site={"head/neck": 0.3, "anterior torso": 0.2, "posterior torso": 0.2,
                      "lower extremity": 0.15, "upper extremity": 0.12, "lateral torso": 0.03}),
    "DF": dict(age=(50, 15), male=0.45,
               site={"lower extremity": 0.7, "upper extremity": 0.15, "anterior torso": 0.08,
                     "posterior torso": 0.07}),
    "VASC": dict(age=(50, 18), male=0.47,
                 site={"anterior torso": 0.3, "lower extremity": 0.2, "head/neck": 0.2,
                       "posterior torso": 0.12, "upper extremity": 0.1, "oral/genital": 0.05,
                       "palms/soles": 0.03}),
    "SCC": dict(age=(71, 11), male=0.64,
                site={"head/neck": 0.5, "upper extremity": 0.2, "lower extremity": 0.15,
                      "anterior torso": 0.08, "posterior torso": 0.07}),
}

_SKIN_TONES = np.array([
    [236, 198, 182],  # fair, pinkish
    [226, 180, 156],  # light
    [232, 186, 168],  # pink under polarised light
    [212, 164, 134],  # light tan
    [222, 176, 140],  # olive
], np.float32)


def expected_image_count(n: int = 200, datasets=DEFAULT_DATASETS) -> int:
    """Returns how many images `make_synthetic` writes (and so how often it calls `progress`).

    Args:
        n: images per dataset, as passed to `make_synthetic`.
        datasets: dataset names, as passed to `make_synthetic`.
    """
    names = _check_datasets(datasets)
    extra = {"isic2018": max(4, n // 10), "isic2017": 2 * max(4, n // 10)}
    return sum(n + extra.get(name, 0) for name in names)


def make_synthetic(out_dir, n=200, seed=0, image_size=(256, 192),
                   datasets=DEFAULT_DATASETS, progress=None) -> dict:
    """Writes a synthetic dataset in the official layouts; returns {dataset_name: folder_path (str)}.

    Args:
        out_dir: root folder; each dataset goes into `out_dir/<dataset_name>/`. Existing files
            with the same names are overwritten.
        n: training images per dataset (1..20000). isic2018 additionally gets max(4, n // 10)
            validation pairs, isic2017 max(4, n // 10) validation and as many test images. At
            least 3 lesions per class need n >= 21 for ham10000 and n >= 24 for isic2019; ph2
            and the isic2017 training set hold every class from n >= 6 (the isic2017
            validation and test sets always do). Smaller n still works with fewer per class.
        seed: non-negative integer; the same seed gives byte-identical files.
        image_size: (width, height) of every image and mask.
        datasets: any of `DATASETS` ("isic2018", "ham10000", "isic2019", "ph2", "isic2017");
            default `DEFAULT_DATASETS`, the first three.
        progress: optional callable, called with no arguments after each written image.
    """
    names = _check_datasets(datasets)
    n = int(n)
    if not 1 <= n <= _MAX_N:
        raise ValueError(f"n must be in 1..{_MAX_N} so the id ranges stay distinct, got {n}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    w, h = (int(s) for s in image_size)
    if w < 32 or h < 32:
        raise ValueError(f"image_size must be at least 32x32, got {image_size}")
    tick = progress if progress is not None else (lambda: None)
    writers = {"isic2018": _write_isic2018, "ham10000": _write_ham10000,
               "isic2019": _write_isic2019, "ph2": _write_ph2, "isic2017": _write_isic2017}
    out = Path(out_dir)
    result = {}
    for name in names:
        folder = out / name
        writers[name](folder, n, seed, (w, h), tick)
        result[name] = str(folder)  # plain strings: callers store them in JSON run configs
    return result


def _check_datasets(datasets):
    if isinstance(datasets, str):
        datasets = (datasets,)
    names = tuple(dict.fromkeys(datasets))
    unknown = [d for d in names if d not in DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {DATASETS}")
    return names


def _rng(seed, *keys):
    # Keyed streams keep every dataset (and every lesion) independent of which other
    # datasets were requested and of how many images came before it.
    return np.random.default_rng([seed, *keys])


# ----------------------------------------------------------------------------- layouts


def _write_isic2018(folder, n, seed, size, tick):
    code = DATASETS.index("isic2018")
    rng = _rng(seed, code)
    n_val = max(4, n // 10)
    looks = _sample_classes(rng, n + n_val, _ISIC2018_FREQ, min_per_class=0)
    splits = [("Training", 0, n), ("Validation", n, n + n_val)]
    for split, start, stop in splits:
        img_dir = folder / f"ISIC2018_Task1-2_{split}_Input"
        gt_dir = folder / f"ISIC2018_Task1_{split}_GroundTruth"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        for i in range(start, stop):
            image_id = f"ISIC_{_ID_START['isic2018'] + i:07d}"
            lrng = _rng(seed, code, 1, i)
            lesion = _sample_lesion(lrng, looks[i], size)
            img, mask = _render(lesion, lesion["view"], lrng, size)
            _save_pair(img, mask, img_dir / f"{image_id}.jpg", gt_dir / f"{image_id}_segmentation.png")
            tick()


def _write_ham10000(folder, n, seed, size, tick):
    code = DATASETS.index("ham10000")
    rng = _rng(seed, code)
    classes = HAM10000_CLASSES
    sizes = _lesion_sizes(rng, n, min_lesions=3 * len(classes))
    looks = _sample_classes(rng, len(sizes), _HAM_FREQ, min_per_class=3)
    lesion_nums = _distinct(rng, len(sizes), 7500)
    # Images of one lesion get unrelated ids, as in the real set.
    ids = _ID_START["ham10000"] + rng.permutation(n)
    part1_end = _ID_START["ham10000"] + (n + 1) // 2

    seg_dir = folder / "HAM10000_segmentations_lesion_tschandl"
    dirs = [folder / "HAM10000_images_part_1", folder / "HAM10000_images_part_2", seg_dir]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)

    rows, k = [], 0
    for li, (count, dx) in enumerate(zip(sizes, looks)):
        meta = _HAM_META[dx]
        lesion_id = f"HAM_{lesion_nums[li]:07d}"
        dx_type = _pick(rng, meta["dx_type"])
        if count > 1 and dx_type == "histo" and dx == "nv" and rng.random() < 0.7:
            dx_type = "follow_up"  # a nevus photographed repeatedly is usually a follow-up case
        age = _age(rng, *meta["age"], missing=0.03)
        sex = _sex(rng, meta["male"], unknown=0.01)
        loc = _pick(rng, meta["loc"], floor=0.04, vocabulary=HAM10000_LOCALIZATIONS)
        lrng = _rng(seed, code, 1, li)
        lesion = _sample_lesion(lrng, dx, size)
        for v in range(count):
            image_id = ids[k]
            k += 1
            view = lesion["view"] if v == 0 else _jitter_view(lrng, lesion, size)
            img, mask = _render(lesion, view, lrng, size)
            part = dirs[0] if image_id < part1_end else dirs[1]
            name = f"ISIC_{image_id:07d}"
            _save_pair(img, mask, part / f"{name}.jpg", seg_dir / f"{name}_segmentation.png")
            rows.append([lesion_id, name, dx, dx_type, age, sex, loc])
            tick()
    _write_csv(folder / "HAM10000_metadata.csv", HAM10000_COLUMNS, rows)


def _write_isic2019(folder, n, seed, size, tick):
    code = DATASETS.index("isic2019")
    rng = _rng(seed, code)
    classes = ISIC2019_CLASSES
    sizes = _lesion_sizes(rng, n, min_lesions=3 * len(classes))
    labels = _sample_classes(rng, len(sizes), _ISIC2019_FREQ, min_per_class=3)
    lesion_nums = _distinct(rng, len(sizes), 8000)
    ids = _ID_START["isic2019"] + rng.permutation(n)

    img_dir = folder / "ISIC_2019_Training_Input"
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_rows, meta_rows, k = [], [], 0
    for li, (count, label) in enumerate(zip(sizes, labels)):
        meta = _ISIC2019_META[label]
        # Older archive images carry no lesion id; those are single images in the real file.
        lesion_id = "" if count == 1 and rng.random() < 0.15 else f"BCN_{lesion_nums[li]:07d}"
        age = _age(rng, *meta["age"], missing=0.03)
        sex = _sex(rng, meta["male"], unknown=0.0)
        if rng.random() < 0.03:
            sex = ""
        site = "" if rng.random() < 0.08 else _pick(rng, meta["site"], floor=0.04,
                                                     vocabulary=ISIC2019_SITES)
        lrng = _rng(seed, code, 1, li)
        lesion = _sample_lesion(lrng, _ISIC2019_TO_LOOK[label], size)
        for v in range(count):
            name = f"ISIC_{ids[k]:07d}"
            k += 1
            view = lesion["view"] if v == 0 else _jitter_view(lrng, lesion, size)
            img, _ = _render(lesion, view, lrng, size)
            Image.fromarray(img).save(img_dir / f"{name}.jpg", quality=_JPEG_QUALITY)
            onehot = ["1.0" if c == label else "0.0" for c in classes]
            gt_rows.append([name, *onehot, "0.0"])
            meta_rows.append([name, age, site, lesion_id, sex])
            tick()
    # The real files are sorted by image name.
    gt_rows.sort(key=lambda r: r[0])
    meta_rows.sort(key=lambda r: r[0])
    _write_csv(folder / "ISIC_2019_Training_GroundTruth.csv", ISIC2019_GT_COLUMNS, gt_rows)
    _write_csv(folder / "ISIC_2019_Training_Metadata.csv", ISIC2019_META_COLUMNS, meta_rows)


# The official PH2_dataset.txt header; data cells are centred in the width of their header cell.
PH2_HEADER = ("|| Name ||  Histological Diagnosis || Clinical Diagnosis || Asymmetry || Pigment Network "
              "|| Dots/Globules || Streaks || Regression Areas || Blue-Whitish Veil || White || Red "
              "|| Light-Brown || Dark-Brown || Blue-Gray || Black ||")
PH2_LEGEND = """
Legends:

Clinical Diagnosis:
\t0 - Common Nevus;
\t1 - Atypical Nevus;
\t2 - Melanoma.

Asymmetry:
\t0 - Fully Symmetric;
\t1 - Symetric in 1 axe;
\t2 - Fully Asymmetric.

Pigment Network, Dots/Globules, Streaks, Regression Areas, and Blue-Whitish Veil:
\tA - Absent;
\tAT - Atypical;
\tP - Present;
\tT - Typical.

Colors:
\tX - Present.
"""
# Dermoscopic criteria per PH2 class: P(asymmetry 0/1/2), P(atypical network), P(dots absent/typical/
# atypical), P(streaks), P(regression), P(veil), P(each colour: white, red, light/dark brown, blue-gray, black).
_PH2_CRITERIA = {
    "common_nevus": dict(asym=(0.8, 0.15, 0.05), net=0.1, dots=(0.6, 0.35, 0.05), streaks=0.05,
                         regression=0.02, veil=0.0, colours=(0.0, 0.02, 0.7, 0.5, 0.02, 0.0)),
    "atypical_nevus": dict(asym=(0.4, 0.4, 0.2), net=0.5, dots=(0.4, 0.3, 0.3), streaks=0.15,
                           regression=0.1, veil=0.02, colours=(0.02, 0.05, 0.8, 0.7, 0.1, 0.05)),
    "melanoma": dict(asym=(0.0, 0.2, 0.8), net=0.9, dots=(0.2, 0.1, 0.7), streaks=0.5,
                     regression=0.5, veil=0.6, colours=(0.3, 0.3, 0.7, 0.9, 0.7, 0.5)),
}


def _ph2_row(rng, diagnosis):
    c = _PH2_CRITERIA[diagnosis]
    histology = "Melanoma" if diagnosis == "melanoma" else ""
    cells = [histology, str(PH2_CLASSES.index(diagnosis)), str(int(rng.choice(3, p=c["asym"]))),
             "AT" if rng.random() < c["net"] else "T", ("A", "T", "AT")[int(rng.choice(3, p=c["dots"]))]]
    cells += ["P" if rng.random() < c[k] else "A" for k in ("streaks", "regression", "veil")]
    cells += ["X" if rng.random() < p else "" for p in c["colours"]]
    return cells


def _write_ph2(folder, n, seed, size, tick):
    code = DATASETS.index("ph2")
    rng = _rng(seed, code)
    diagnoses = _sample_classes(rng, n, _PH2_FREQ, min_per_class=2)
    # The real ids run IMD002..IMD437 with gaps.
    nums = np.sort(_distinct(rng, n, 436)) + 2
    widths = [len(cell) for cell in PH2_HEADER.split("||")[1:-1]]
    lines = [PH2_HEADER]
    images = folder / "PH2 Dataset images"
    for i, (num, diagnosis) in enumerate(zip(nums, diagnoses)):
        name = f"IMD{num:03d}"
        cells = [name] + _ph2_row(rng, diagnosis)
        lines.append("||" + "||".join(f" {v.center(max(w - 2, len(v)))} " for v, w in zip(cells, widths)) + "||")
        case = images / name
        img_dir, mask_dir = case / f"{name}_Dermoscopic_Image", case / f"{name}_lesion"
        img_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        lrng = _rng(seed, code, 1, i)
        lesion = _sample_lesion(lrng, _PH2_TO_LOOK[diagnosis], size)
        img, mask = _render(lesion, lesion["view"], lrng, size)
        Image.fromarray(img).save(img_dir / f"{name}.bmp")
        Image.fromarray(mask).save(mask_dir / f"{name}_lesion.bmp")
        if i < 2:
            # Colour-region masks sit next to the lesion mask in the release; readers must ignore them.
            roi = case / f"{name}_roi"
            roi.mkdir(exist_ok=True)
            half = mask.copy()
            half[:, mask.shape[1] // 2:] = 0
            Image.fromarray(half).save(roi / f"{name}_R1_Label4.bmp")
        tick()
    (folder / "PH2_dataset.txt").write_text("\n".join(lines) + "\n" + PH2_LEGEND, encoding="utf-8", newline="\n")


def _superpixels(w, h, cell=8):
    """An ISIC 2017 superpixel map: the segment index of each pixel encoded as R + 256 * G."""
    yy, xx = np.mgrid[0:h, 0:w]
    label = (yy // cell) * ((w + cell - 1) // cell) + xx // cell
    return np.stack([label & 255, (label >> 8) & 255, np.zeros_like(label)], -1).astype(np.uint8)


def _write_isic2017(folder, n, seed, size, tick):
    code = DATASETS.index("isic2017")
    rng = _rng(seed, code)
    n_small = max(4, n // 10)
    splits = [("Training", 0, n, 2), ("Validation", n, n + n_small, 1),
              ("Test_v2", n + n_small, n + 2 * n_small, 1)]
    for split, start, stop, min_per_class in splits:
        diagnoses = _sample_classes(rng, stop - start, _ISIC2017_FREQ, min_per_class=min_per_class)
        img_dir = folder / f"ISIC-2017_{split}_Data"
        gt_dir = folder / f"ISIC-2017_{split}_Part1_GroundTruth"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        gt_rows, meta_rows = [], []
        for k, (i, diagnosis) in enumerate(zip(range(start, stop), diagnoses)):
            image_id = f"ISIC_{_ID_START['isic2017'] + i:07d}"
            meta = _ISIC2019_META[_ISIC2017_TO_ISIC2019[diagnosis]]
            age = "unknown" if rng.random() < 0.1 else str(int(np.clip(5 * round(rng.normal(*meta["age"]) / 5), 0, 85)))
            sex = _sex(rng, meta["male"], unknown=0.03)
            lrng = _rng(seed, code, 1, i)
            lesion = _sample_lesion(lrng, _ISIC2017_TO_LOOK[diagnosis], size)
            img, mask = _render(lesion, lesion["view"], lrng, size)
            _save_pair(img, mask, img_dir / f"{image_id}.jpg", gt_dir / f"{image_id}_segmentation.png")
            if k < 2:
                # The release has a superpixel PNG beside every image; two per subset test that readers skip them.
                Image.fromarray(_superpixels(*size)).save(img_dir / f"{image_id}_superpixels.png")
            gt_rows.append([image_id, "1.0" if diagnosis == "melanoma" else "0.0",
                            "1.0" if diagnosis == "seborrheic_keratosis" else "0.0"])
            meta_rows.append([image_id, age, sex])
            tick()
        if len(meta_rows) > 1 and not any(r[1] == "unknown" for r in meta_rows):
            meta_rows[1][1] = "unknown"  # every subset shows the real file's "unknown" ages
        _write_csv(folder / f"ISIC-2017_{split}_Part3_GroundTruth.csv",
                   ("image_id", "melanoma", "seborrheic_keratosis"), gt_rows)
        _write_csv(img_dir / f"ISIC-2017_{split}_Data_metadata.csv", ("image_id", "age_approximate", "sex"),
                   meta_rows)


def _save_pair(img, mask, img_path, mask_path):
    Image.fromarray(img).save(img_path, quality=_JPEG_QUALITY)
    Image.fromarray(mask).save(mask_path)


def _write_csv(path, columns, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


# ----------------------------------------------------------------------------- metadata


def _lesion_sizes(rng, n, min_lesions):
    """Number of images of each lesion: sums to n, at least min(n, min_lesions) lesions."""
    p = _IMAGES_PER_LESION / _IMAGES_PER_LESION.sum()
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.choice(len(p), p=p)) + 1)
    sizes[-1] -= sum(sizes) - n
    sizes = [s for s in sizes if s > 0]
    # Too few lesions would leave a class without its guaranteed minimum: split groups.
    while len(sizes) < min(n, min_lesions):
        big = int(np.argmax(sizes))
        sizes[big] -= 1
        sizes.append(1)
    # Group-aware splitting needs at least one lesion with several images.
    if n >= 2 and max(sizes) == 1 and len(sizes) > min_lesions:
        sizes.pop()
        sizes[0] = 2
    order = rng.permutation(len(sizes))
    return [sizes[i] for i in order]


def _sample_classes(rng, count, freq, min_per_class):
    names = list(freq)
    p = np.array([freq[c] for c in names], float)
    p /= p.sum()
    k = min(min_per_class, count // len(names))
    labels = [c for c in names for _ in range(k)]
    labels += [names[i] for i in rng.choice(len(names), size=count - len(labels), p=p)]
    return [labels[i] for i in rng.permutation(count)]


def _distinct(rng, count, pool):
    return rng.permutation(max(pool, count))[:count]


def _pick(rng, weights, floor=0.0, vocabulary=None):
    # A small floor over the whole vocabulary keeps metadata informative but not decisive.
    keys = list(vocabulary) if vocabulary is not None else list(weights)
    p = np.array([weights.get(k, 0.0) for k in keys], float)
    p = p / p.sum() * (1 - floor) + floor / len(keys)
    return keys[int(rng.choice(len(keys), p=p))]


def _age(rng, mean, sd, missing):
    if rng.random() < missing:
        return ""
    return f"{float(np.clip(5 * round(rng.normal(mean, sd) / 5), 0, 85)):.1f}"


def _sex(rng, p_male, unknown):
    r = rng.random()
    if r < unknown:
        return "unknown"
    return "male" if r < unknown + (1 - unknown) * p_male else "female"


# ----------------------------------------------------------------------------- lesions


def _u(rng, lo_hi):
    return float(rng.uniform(*lo_hi))


def _sample_lesion(rng, look, size):
    """Everything about one lesion that stays fixed across photographs of it."""
    w, h = size
    shape = _SHAPE[look]
    unit = min(w, h) / 192.0  # texture sizes are tuned at 256x192
    k = np.arange(2, shape["harm"] + 1)
    irreg = _u(rng, shape["irreg"])
    amps = rng.normal(0, irreg, k.size) * k ** -0.8
    if np.abs(amps).sum() > 0.6:  # keeps the radius positive everywhere
        amps *= 0.6 / np.abs(amps).sum()
    phases = rng.uniform(0, 2 * np.pi, k.size)
    aspect = _u(rng, shape["aspect"])
    ax, ay = aspect ** -0.5, aspect ** 0.5
    area = _u(rng, shape["area"]) * w * h
    radius = math.sqrt(area / (math.pi * (1 + 0.5 * float(np.sum(amps ** 2)))))
    theta = np.linspace(-np.pi, np.pi, 512, endpoint=False)
    r_table = radius * (1 + np.cos(np.outer(theta, k) + phases) @ amps)
    r_max = float(r_table.max()) * ax

    lesion = dict(
        look=look, unit=unit, radius=radius, r_theta=theta, r_table=r_table,
        ax=ax, ay=ay, soft=_u(rng, shape["soft"]), fuzz=shape["fuzz"], extent=1.5 * r_max,
        skin=_skin_tone(rng),
        grids=dict(
            low=_grid(rng, 5, 64), low2=_grid(rng, 5, 64),
            mid=_grid(rng, 14, 128), hi=_grid(rng, max(24, int(radius / (2.5 * unit))), 256),
        ),
        dens={name: 0.0 for name in _LAYERS}, white_rgb=np.array([250, 245, 236], np.float32),
        dots=[], lines=[], features={},
    )
    lesion["view"] = _base_view(rng, r_max, size)
    _LOOKS[look](rng, lesion)
    return lesion


def _grid(rng, cells, out):
    """A smooth zero-mean, unit-variance random field on an out x out grid (a float PIL image)."""
    g = rng.standard_normal((cells, cells), dtype=np.float32)
    up = np.asarray(Image.fromarray(g).resize((out, out), Image.BICUBIC))
    return Image.fromarray((up - up.mean()) / (up.std() + 1e-6))


def _skin_tone(rng):
    wts = rng.dirichlet(np.full(len(_SKIN_TONES), 0.6))
    return (wts @ _SKIN_TONES) * rng.uniform(0.95, 1.03)


def _base_view(rng, r_max, size):
    w, h = size
    # Dermoscopy framing mostly centres the lesion; a margin of 90% of the radius lets big
    # lesions touch the border now and then.
    cx = _centre(rng, w, 0.9 * r_max)
    cy = _centre(rng, h, 0.9 * r_max)
    return dict(cx=cx, cy=cy, angle=float(rng.uniform(0, 2 * np.pi)), scale=1.0)


def _centre(rng, length, margin):
    lo, hi = margin, length - margin
    if hi <= lo:
        return length / 2 + float(rng.normal(0, 0.03 * length))
    mid = length / 2
    return float(np.clip(rng.normal(mid, 0.3 * (hi - lo)), lo, hi))


def _jitter_view(rng, lesion, size):
    w, h = size
    base = lesion["view"]
    scale = float(rng.uniform(0.9, 1.1))
    margin = 0.8 * lesion["extent"] / 1.5 * scale
    cx = base["cx"] + float(rng.normal(0, 0.06 * w))
    cy = base["cy"] + float(rng.normal(0, 0.06 * h))
    cx = float(np.clip(cx, min(margin, w / 2), max(w - margin, w / 2)))
    cy = float(np.clip(cy, min(margin, h / 2), max(h - margin, h / 2)))
    return dict(cx=cx, cy=cy, angle=base["angle"] + float(rng.normal(0, 0.35)), scale=scale)


def _points(rng, count, rho_range, lesion, cluster=None):
    """Random points in lesion coordinates between two normalised radii (ignoring harmonics)."""
    ang = rng.uniform(0, 2 * np.pi, count)
    if cluster is not None:  # clustered on one side: asymmetry
        ang = rng.normal(cluster, 0.9, count)
    rad = np.sqrt(rng.uniform(rho_range[0] ** 2, rho_range[1] ** 2, count)) * lesion["radius"]
    return np.stack([np.cos(ang) * rad * lesion["ax"], np.sin(ang) * rad * lesion["ay"]], 1)


def _add_dots(lesion, uv, amp, sigma, layer):
    lesion["dots"].append(dict(uv=uv, amp=np.broadcast_to(np.asarray(amp, np.float32), len(uv)),
                               sigma=sigma * lesion["unit"], layer=layer))


def _vessels(rng, lesion, count, length, branchiness, rho_max=0.8):
    """Curvy, branching polylines in lesion coordinates (arborising vessels)."""
    unit = lesion["unit"]
    lines = []
    starts = _points(rng, count, (0.1, rho_max), lesion)
    for start in starts:
        stack = [(start, rng.uniform(0, 2 * np.pi), int(length * rng.uniform(0.6, 1.2)))]
        while stack:
            p, ang, steps = stack.pop()
            pts = [p]
            for _ in range(max(steps, 2)):
                ang += rng.normal(0, 0.35)
                p = p + 2.5 * unit * np.array([np.cos(ang), np.sin(ang)])
                pts.append(p)
                if steps > 4 and rng.random() < branchiness:
                    stack.append((p, ang + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1), steps // 2))
            lines.append(np.array(pts))
    return lines


# Per-class appearance. Densities are in optical-density units (see _OD); white is a blend weight.

def _look_nv(rng, les):
    les["dens"].update(epi=_u(rng, (0.85, 1.3)), blood=_u(rng, (0.02, 0.08)))
    les["features"].update(
        mottle=0.08, center=_u(rng, (0.0, 0.35)),
        network=dict(cell=_u(rng, (5.5, 8.0)), width=0.14, amp=_u(rng, (0.25, 0.5)), warp=0.1),
    )
    if rng.random() < 0.35:  # globular nevus
        uv = _points(rng, int(rng.integers(12, 35)), (0.0, 0.85), les)
        _add_dots(les, uv, _u(rng, (0.5, 0.8)), _u(rng, (1.5, 2.3)), "epi")


def _look_mel(rng, les):
    les["dens"].update(epi=_u(rng, (1.45, 2.0)), blood=_u(rng, (0.05, 0.15)))
    les["features"].update(
        mottle=_u(rng, (0.25, 0.4)), center=0.1, asym=(_u(rng, (0.2, 0.4)), rng.uniform(0, 6.3)),
        network=dict(cell=_u(rng, (6.0, 10.0)), width=0.17, amp=_u(rng, (0.25, 0.5)), warp=0.6,
                     broken=True),
        veil=dict(amp=_u(rng, (0.7, 1.3)), thresh=_u(rng, (-0.2, 0.5))),
    )
    side = rng.uniform(0, 2 * np.pi)
    uv = _points(rng, int(rng.integers(15, 50)), (0.3, 1.0), les, cluster=side)
    _add_dots(les, uv, rng.uniform(0.8, 1.8, len(uv)), _u(rng, (0.9, 1.6)), "epi")
    _add_dots(les, uv, rng.uniform(0.3, 0.8, len(uv)), 1.2, "deep")
    if rng.random() < 0.4:  # regression: blue-white scar-like area
        les["features"]["regression"] = _u(rng, (0.2, 0.4))
        les["white_rgb"] = np.array([226, 232, 244], np.float32)


def _look_bcc(rng, les):
    les["dens"].update(epi=_u(rng, (0.03, 0.15)), blood=_u(rng, (0.38, 0.62)))
    les["features"].update(mottle=0.2, shiny=_u(rng, (0.08, 0.2)))
    lines = _vessels(rng, les, int(rng.integers(3, 8)), 14, 0.12)
    les["lines"].append(dict(lines=lines, width=_u(rng, (1.0, 1.8)), amp=_u(rng, (1.6, 2.3)),
                             layer="blood"))
    if rng.random() < 0.6:  # blue-grey ovoid nests
        uv = _points(rng, int(rng.integers(3, 9)), (0.1, 0.85), les)
        _add_dots(les, uv, rng.uniform(0.8, 1.3, len(uv)), _u(rng, (3.0, 5.5)), "deep")
    if rng.random() < 0.3:  # ulceration: dark red-brown crust
        uv = _points(rng, 1, (0.0, 0.4), les)
        _add_dots(les, uv, 1.6, _u(rng, (5, 9)), "blood")
        _add_dots(les, uv, 0.7, 7, "epi")


def _look_akiec(rng, les):
    les["dens"].update(epi=_u(rng, (0.1, 0.3)), blood=_u(rng, (0.55, 0.85)))
    les["features"].update(mottle=0.3, blood_mottle=0.35,
                           scale=dict(amp=_u(rng, (0.35, 0.6)), thresh=_u(rng, (0.3, 0.9))),
                           rough=0.18)
    les["white_rgb"] = np.array([246, 238, 214], np.float32)
    uv = _points(rng, int(rng.integers(20, 50)), (0.0, 0.9), les)  # strawberry pattern
    _add_dots(les, uv, rng.uniform(0.6, 1.2, len(uv)), 1.1, "blood")


def _look_bkl(rng, les):
    les["dens"].update(epi=_u(rng, (0.5, 0.85)), blood=_u(rng, (0.02, 0.08)))
    les["features"].update(mottle=0.15, ridges=dict(amp=_u(rng, (0.08, 0.2)), freq=_u(rng, (2.0, 3.5))))
    uv = _points(rng, int(rng.integers(5, 20)), (0.0, 0.85), les)  # milia-like cysts
    _add_dots(les, uv, rng.uniform(0.4, 0.7, len(uv)), _u(rng, (1.3, 2.2)), "white")
    uv = _points(rng, int(rng.integers(4, 12)), (0.0, 0.85), les)  # comedo-like openings
    _add_dots(les, uv, rng.uniform(0.7, 1.2, len(uv)), _u(rng, (1.4, 2.2)), "epi")


def _look_df(rng, les):
    les["dens"].update(epi=_u(rng, (0.8, 1.2)), blood=_u(rng, (0.1, 0.2)))
    les["features"].update(
        mottle=0.1, ring=True, center_white=_u(rng, (0.45, 0.7)),
        network=dict(cell=_u(rng, (4.5, 6.0)), width=0.12, amp=_u(rng, (0.2, 0.35)), warp=0.15),
    )


def _look_vasc(rng, les):
    les["dens"].update(epi=_u(rng, (0.0, 0.1)), blood=_u(rng, (0.9, 1.3)))
    les["features"].update(mottle=0.1, septa=0.12)
    uv = _points(rng, int(rng.integers(15, 40)), (0.0, 0.85), les)  # lacunae
    _add_dots(les, uv, rng.uniform(0.4, 0.9, len(uv)), _u(rng, (2.5, 4.5)), "purple")


def _look_scc(rng, les):
    les["dens"].update(epi=_u(rng, (0.02, 0.1)), blood=_u(rng, (0.4, 0.6)))
    les["features"].update(mottle=0.2, keratin=_u(rng, (0.5, 0.75)), rough=0.12)
    les["white_rgb"] = np.array([244, 234, 200], np.float32)
    uv = _points(rng, int(rng.integers(20, 50)), (0.4, 0.95), les)  # glomerular vessels
    _add_dots(les, uv, rng.uniform(1.0, 1.8, len(uv)), _u(rng, (0.9, 1.4)), "blood")
    if rng.random() < 0.3:  # blood spots / crust
        uv = _points(rng, int(rng.integers(1, 3)), (0.0, 0.5), les)
        _add_dots(les, uv, 1.4, _u(rng, (3, 6)), "blood")


_LOOKS = {"nv": _look_nv, "mel": _look_mel, "bcc": _look_bcc, "akiec": _look_akiec,
          "bkl": _look_bkl, "df": _look_df, "vasc": _look_vasc, "scc": _look_scc}


# ----------------------------------------------------------------------------- rendering


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@functools.lru_cache(maxsize=4)
def _pixel_grid(w, h):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def _render(lesion, view, rng, size):
    """Renders one photograph of `lesion`; returns (RGB uint8 image, uint8 mask 0/255)."""
    w, h = size
    f = lesion["features"]
    xx_full, yy_full = _pixel_grid(w, h)
    cx, cy, s = view["cx"], view["cy"], view["scale"]
    ca, sa = math.cos(view["angle"]), math.sin(view["angle"])

    # Only the lesion's bounding box needs the expensive layers; the rest is plain skin.
    reach = lesion["extent"] / 1.5 * s * (1 + lesion["soft"] + 4 * lesion["fuzz"]) + 3
    x0, x1 = max(0, int(cx - reach)), min(w, int(math.ceil(cx + reach)) + 1)
    y0, y1 = max(0, int(cy - reach)), min(h, int(math.ceil(cy + reach)) + 1)
    cw, ch = x1 - x0, y1 - y0
    xx, yy = xx_full[y0:y1, x0:x1], yy_full[y0:y1, x0:x1]
    u = (ca * (xx - cx) + sa * (yy - cy)) / s
    v = (-sa * (xx - cx) + ca * (yy - cy)) / s

    cache = {}

    def field(name):
        # Fields live in lesion coordinates, so every photograph of a lesion shows the same
        # texture; an affine warp of the stored grid is far cheaper than map_coordinates.
        if name not in cache:
            g = lesion["grids"][name]
            m = g.size[0] - 1
            k = 0.5 * m / lesion["extent"] / s
            ox, oy = x0 - 0.5 - cx, y0 - 0.5 - cy
            data = (k * ca, k * sa, k * (ca * ox + sa * oy) + 0.5 * m + 0.5,
                    -k * sa, k * ca, k * (-sa * ox + ca * oy) + 0.5 * m + 0.5)
            out = g.transform((cw, ch), Image.AFFINE, data, resample=Image.BILINEAR)
            cache[name] = np.asarray(out)
        return cache[name]

    # Shape: star-shaped blob, radius = R * (1 + sum a_k cos(k theta + phi_k)), tabulated.
    us, vs = u / lesion["ax"], v / lesion["ay"]
    theta = np.arctan2(vs, us)
    r = np.interp(theta, lesion["r_theta"], lesion["r_table"], period=2 * np.pi).astype(np.float32)
    rho = np.hypot(us, vs) / r + lesion["fuzz"] * field("mid")
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = np.where(rho < 1.0, 255, 0)
    alpha = _smoothstep((1.0 - rho) / (2 * lesion["soft"]) + 0.5)

    d = {}

    def add(layer, value):
        d[layer] = d[layer] + value if layer in d else value

    dens = lesion["dens"]
    low, low2 = field("low"), field("low2")

    epi = dens["epi"] * (1 + f.get("mottle", 0.0) * low)
    epi = epi * (1 + f.get("center", 0.0) * np.clip(1 - rho, 0, 1))
    if "asym" in f:
        amp, ang = f["asym"]
        epi *= 1 + amp * np.clip((math.cos(ang) * u + math.sin(ang) * v) / lesion["radius"], -1, 1)
    if f.get("ring"):
        # Dermatofibroma: pigment in a peripheral ring, pale scar-like centre.
        epi *= 0.25 + 0.75 * _smoothstep((rho - 0.3) / 0.35)
        add("white", f["center_white"] * (1 - _smoothstep((rho - 0.2 + 0.08 * field("mid")) / 0.25)))
    if "network" in f:
        net = f["network"]
        lines = _network(u, v, net["cell"] * lesion["unit"], net["width"],
                         net["warp"], field("mid"), low2)
        strength = net["amp"] * (0.5 + 0.5 * _smoothstep(rho / 0.8))
        if net.get("broken"):
            strength = strength * _smoothstep(low2 + 0.8) * (1 + 0.5 * np.abs(field("mid")))
        epi = (epi + strength * lines * dens["epi"]) * (1 - 0.15 * (1 - lines))  # lighter holes
    if "ridges" in f:
        rg = f["ridges"]
        epi *= 1 + rg["amp"] * np.cos(2 * np.pi * rg["freq"] * field("mid"))
    if "rough" in f:
        epi = epi + f["rough"] * np.abs(field("hi"))
    add("epi", epi)

    blood = dens["blood"] * (1 + f.get("blood_mottle", 0.0) * low2)
    if "rough" in f:
        blood = blood * (1 + f["rough"] * field("hi"))
    add("blood", blood)
    if "veil" in f:
        veil = f["veil"]
        add("deep", veil["amp"] * _smoothstep((low2 - veil["thresh"]) / 0.6))
    if "regression" in f:
        # Regression covers a minor part of the lesion: the patch is a tail of the field.
        patch = _smoothstep((-low - 0.8) / 0.5)
        add("white", f["regression"] * patch)
        add("deep", 0.4 * patch)
        d["epi"] = d["epi"] * (1 - 0.5 * patch)
    if "scale" in f:
        sc = f["scale"]
        flakes = _smoothstep((field("hi") - sc["thresh"]) / 0.5) * _smoothstep(low + 0.5)
        add("white", sc["amp"] * flakes)
    if "keratin" in f:
        core = 1 - _smoothstep((rho - 0.25 + 0.15 * low) / 0.3)
        add("white", f["keratin"] * core * (0.75 + 0.25 * np.tanh(field("hi"))))
    if "shiny" in f:
        add("white", f["shiny"] * _smoothstep((field("mid") - 0.8) / 0.4))
    if "septa" in f:
        add("white", f["septa"] * _smoothstep((field("mid") - 0.2) / 0.6))

    def to_crop(uv):
        x = cx + s * (ca * uv[:, 0] - sa * uv[:, 1]) - x0
        y = cy + s * (sa * uv[:, 0] + ca * uv[:, 1]) - y0
        return x, y

    for dots in lesion["dots"]:
        x, y = to_crop(dots["uv"])
        add(dots["layer"], _splat(x, y, dots["amp"], dots["sigma"] * s, cw, ch))
    for group in lesion["lines"]:
        polylines = [np.stack(to_crop(pts), 1) for pts in group["lines"]]
        add(group["layer"], group["amp"] * _draw_polylines(polylines, group["width"] * s, cw, ch))

    img = _skin(rng, lesion["skin"], w, h)
    od = sum(np.clip(d[name], 0, None)[..., None] * alpha[..., None] * _OD[name]
             for name in ("epi", "deep", "blood", "purple") if name in d)
    crop = img[y0:y1, x0:x1] * np.exp(-od)
    if "white" in d:
        white = np.clip(d["white"] * alpha, 0, 0.9)[..., None]
        crop = crop * (1 - white) + lesion["white_rgb"] * white
    img[y0:y1, x0:x1] = crop
    img = _hairs(rng, img, w, h)
    img = _lighting(rng, img, xx_full, yy_full, w, h)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(1.5, 3.5))
    img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return img, mask


def _network(u, v, cell, width, warp, mid, low2):
    """Pigment network: edges of a jittered cell pattern (Worley F2 - F1), in [0, 1]."""
    gu = u / cell + warp * mid
    gv = v / cell + warp * low2
    iu, iv = np.floor(gu).astype(np.int64), np.floor(gv).astype(np.int64)
    fu, fv = gu - iu, gv - iv
    f1 = np.full(u.shape, np.inf, np.float32)
    f2 = np.full(u.shape, np.inf, np.float32)
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            # Hash the cell index into a fixed jitter: the same lesion looks the same in every view.
            hsh = ((iu + du) * 73856093) ^ ((iv + dv) * 19349663)
            ju = ((hsh * 2654435761) & 0xFFFF).astype(np.float32) * (0.7 / 65535)
            jv = (((hsh ^ 0x5BD1E995) * 2246822519) & 0xFFFF).astype(np.float32) * (0.7 / 65535)
            dist = (fu - (du + 0.15) - ju) ** 2 + (fv - (dv + 0.15) - jv) ** 2
            f2 = np.minimum(f2, np.maximum(f1, dist))
            f1 = np.minimum(f1, dist)
    edge = np.sqrt(f2) - np.sqrt(f1)
    return np.exp(-((edge / width) ** 2))


def _splat(x, y, amp, sigma, w, h):
    """Gaussian dots of peak height ~amp at (x, y)."""
    out = np.zeros((h, w), np.float32)
    xi, yi = np.round(x).astype(int), np.round(y).astype(int)
    keep = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    np.add.at(out, (yi[keep], xi[keep]), np.asarray(amp, np.float32)[keep])
    sigma = max(float(sigma), 0.5)
    return ndimage.gaussian_filter(out, sigma, truncate=3.0) * np.float32(2 * np.pi * sigma * sigma)


def _draw_polylines(polylines, width, w, h, ss=2):
    """Antialiased polylines (supersampled), as a [0, 1] coverage map."""
    canvas = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(canvas)
    lw = max(1, int(round(width * ss)))
    for pts in polylines:
        draw.line([(float(px) * ss, float(py) * ss) for px, py in pts], fill=255, width=lw,
                  joint="curve")
    small = canvas.resize((w, h), Image.BOX)
    return np.asarray(small, np.float32) * np.float32(1 / 255)


def _skin(rng, tone, w, h):
    cw, ch = max(2, w // 64) + 1, max(2, h // 64) + 1
    # Mostly brightness drift with a little hue drift: real skin is not blotchy in colour.
    lum = _upsample(rng.standard_normal((ch, cw), dtype=np.float32), w, h)
    hue = _upsample(rng.standard_normal((ch, cw, 3), dtype=np.float32), w, h)
    fine = _upsample(rng.standard_normal((h // 3, w // 3), dtype=np.float32), w, h)
    redness = np.clip(_upsample(rng.standard_normal((ch, cw), dtype=np.float32), w, h), 0, None)
    shade = (1 + 0.035 * lum + 0.02 * fine)[..., None] + 0.012 * hue
    blush = np.exp(-np.float32(rng.uniform(0.0, 0.12)) * redness[..., None] * _OD["blood"])
    return tone.astype(np.float32) * shade * blush


def _upsample(a, w, h):
    if a.ndim == 3:
        return np.stack([_upsample(a[..., c], w, h) for c in range(a.shape[2])], -1)
    return np.asarray(Image.fromarray(a).resize((w, h), Image.BICUBIC))


def _hairs(rng, img, w, h):
    if rng.random() > 0.4:
        return img
    count = int(rng.integers(1, 12))
    diag = math.hypot(w, h)
    curves = []
    t = np.linspace(0, 1, 24)[:, None]
    for _ in range(count):
        p0 = rng.uniform([-0.1 * w, -0.1 * h], [1.1 * w, 1.1 * h])
        ang = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.3, 1.1) * diag
        p2 = p0 + length * np.array([math.cos(ang), math.sin(ang)])
        bend = rng.normal(0, 0.15) * length * np.array([-math.sin(ang), math.cos(ang)])
        p1 = (p0 + p2) / 2 + bend
        curves.append((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2)
    cover = _draw_polylines(curves, rng.uniform(0.8, 1.8) * min(w, h) / 192, w, h)
    colour = rng.uniform([20, 12, 8], [70, 50, 40]).astype(np.float32)
    a = (cover * np.float32(rng.uniform(0.75, 0.95)))[..., None]
    return img * (1 - a) + colour * a


def _lighting(rng, img, xx, yy, w, h):
    gain = (rng.uniform(0.9, 1.06) * rng.normal(1, 0.025, 3)).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = ((xx - w / 2) * math.cos(ang) + (yy - h / 2) * math.sin(ang)) / max(w, h)
    light = 1 + np.float32(rng.uniform(0, 0.12)) * ramp
    if rng.random() < 0.35:
        # The dermoscope's round field of view leaves dark corners.
        dist = np.hypot(xx - w / 2, yy - h / 2) / np.float32(0.5 * math.hypot(w, h))
        r0, width = rng.uniform(0.72, 0.92), rng.uniform(0.03, 0.1)
        light = light * (1 - np.float32(rng.uniform(0.7, 0.97)) * _smoothstep((dist - r0) / width))
    return img * gain * light[..., None]
