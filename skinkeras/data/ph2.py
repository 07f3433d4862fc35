"""PH2 (Mendonca et al., 2013): 200 dermoscopic images with lesion masks and a three-class diagnosis.

Official layout::

    DATA_DIR/PH2_dataset.txt
    DATA_DIR/PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp
    DATA_DIR/PH2 Dataset images/IMD002/IMD002_lesion/IMD002_lesion.bmp
    DATA_DIR/PH2 Dataset images/IMD002/IMD002_roi/...            (colour regions, not used)

`PH2_dataset.txt` is a `||`-separated table (Name, Histological Diagnosis, Clinical Diagnosis,
dermoscopic criteria, colours) followed by a free-text legend. The `Clinical Diagnosis` code is
0 common nevus, 1 atypical nevus, 2 melanoma. The release's `PH2_dataset.xlsx` is not read; a
CSV or TSV export with at least the columns `Name` and `Clinical Diagnosis` is.

PH2 is an external test set for a HAM10000-trained classifier. `HAM10000_MAP` says which
HAM10000 class counts as correct: both nevus kinds are "nv" (HAM10000 has no atypical-nevus
class; PH2's atypical nevi are benign melanocytic lesions, which HAM10000 labels nv) and
melanoma is "mel". PH2 has no age, sex or site: those stay missing.
"""

from __future__ import annotations

import math
import os
import re

import pandas as pd

from skinkeras.data.classification import drop_duplicate_ids, finish_records
from skinkeras.data.isic2018 import IMAGE_EXTENSIONS, Pair

CLASSES = ("common_nevus", "atypical_nevus", "melanoma")
# HAM10000 class a prediction must be to count as correct on PH2 (see the module docstring).
HAM10000_MAP = {"common_nevus": "nv", "atypical_nevus": "nv", "melanoma": "mel"}
TABLE_NAMES = ("PH2_dataset.txt", "PH2_dataset.csv", "PH2_dataset.tsv")
IMAGES_FOLDER = "PH2 Dataset images"
PH2_ID = re.compile(r"IMD\d+")

_NAME_COLUMN = "name"
_DIAGNOSIS_COLUMN = "clinical diagnosis"
# Codes of the official table, plus the class names themselves (a hand-made CSV may spell them out).
_DIAGNOSIS_VALUES = {"0": "common_nevus", "1": "atypical_nevus", "2": "melanoma",
                     **{c.replace("_", " "): c for c in CLASSES}}


def _column_key(name):
    return " ".join(str(name).split()).lower()


def _diagnosis(value):
    """The class name of a diagnosis cell, or None when it is not a valid code."""
    key = " ".join(str(value).replace("_", " ").split()).lower()
    if key in _DIAGNOSIS_VALUES:
        return _DIAGNOSIS_VALUES[key]
    try:
        number = float(key)  # "2.0" from a spreadsheet export
    except ValueError:
        return None
    if math.isfinite(number) and number == int(number):
        return _DIAGNOSIS_VALUES.get(str(int(number)))
    return None


def _bad_code(path, line, value):
    shown = repr(value) if str(value).strip() else "empty"
    return (f"{path} line {line}: clinical diagnosis {shown} is not 0 (common nevus), 1 (atypical nevus) "
            "or 2 (melanoma); fix the cell or remove the row")


def _read_pipe_table(path):
    """Rows of the official `||` table as [(line number, name, raw diagnosis)]; the legend is skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    header = None
    rows = []
    for number, line in enumerate(lines, start=1):
        if "||" not in line:
            continue  # blank lines and the legend after the table
        cells = [c.strip() for c in line.split("||")]
        keys = [_column_key(c) for c in cells]
        if header is None and _NAME_COLUMN in keys:
            if _DIAGNOSIS_COLUMN not in keys:
                raise ValueError(f"{path} line {number}: header has no 'Clinical Diagnosis' column; "
                                 "expected the official PH2_dataset.txt header")
            header = (keys.index(_NAME_COLUMN), keys.index(_DIAGNOSIS_COLUMN))
            continue
        if header is None:
            continue
        name_at, dx_at = header
        name = cells[name_at] if name_at < len(cells) else ""
        if not PH2_ID.fullmatch(name):
            continue  # not a data row (separator, repeated header, legend written as a table)
        rows.append((number, name, cells[dx_at] if dx_at < len(cells) else None))
    if header is None:
        raise ValueError(f"{path}: no header row '|| Name || ... || Clinical Diagnosis || ...'; "
                         "pass the official PH2_dataset.txt, or a CSV/TSV with Name and Clinical Diagnosis columns")
    return rows


def _read_delimited_table(path, sep):
    raw = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8",
                      encoding_errors="replace")
    keys = [_column_key(c) for c in raw.columns]
    missing = [c for c in ("Name", "Clinical Diagnosis") if _column_key(c) not in keys]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (found {list(raw.columns)}); "
                         "expected Name and Clinical Diagnosis")
    name = raw.iloc[:, keys.index(_NAME_COLUMN)].str.strip()
    dx = raw.iloc[:, keys.index(_DIAGNOSIS_COLUMN)].str.strip()
    rows = []
    for i, (n, d) in enumerate(zip(name, dx)):
        if n:  # an all-empty spreadsheet row is not a data row
            rows.append((i + 2, n, d))  # +2: 1-based, after the header line
    return rows


def read_ph2_table(path):
    """Parses the PH2 diagnosis table: the official `||` text file, or a CSV / TSV export.

    A `.csv` file is read comma-separated, a `.tsv` file tab-separated; any other name (the
    official `PH2_dataset.txt`) as the `||` table, unless it holds no `||` at all, in which case
    tabs or commas are tried. Column names match case-insensitively.

    Args:
        path: table file.

    Returns:
        (df, problems): DataFrame with `image_id` (IMDxxx) and `diagnosis` (a name of `CLASSES`),
        in file order; problems as [(image_id, reason)] for rows left out (bad or missing
        diagnosis code, an id listed twice, a malformed id in a CSV).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PH2 table not found: {path}; expected PH2_dataset.txt (or a .csv/.tsv export)")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".xlsx", ".xls"):
        raise ValueError(f"{path}: spreadsheets are not read; use PH2_dataset.txt from the release, "
                         "or save the sheet as PH2_dataset.csv")
    if ext == ".csv":
        rows = _read_delimited_table(path, ",")
    elif ext == ".tsv":
        rows = _read_delimited_table(path, "\t")
    else:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if "||" in text:
            rows = _read_pipe_table(path)
        else:
            rows = _read_delimited_table(path, "\t" if "\t" in text.split("\n", 1)[0] else ",")

    ids, diagnoses, problems = [], [], []
    for number, name, raw in rows:
        if not PH2_ID.fullmatch(name):
            problems.append((name, f"{path} line {number}: image name {name!r} is not an IMDxxx id; row left out"))
            continue
        if raw is None:
            problems.append((name, f"{path} line {number}: row has no Clinical Diagnosis cell; row left out"))
            continue
        diagnosis = _diagnosis(raw)
        if diagnosis is None:
            problems.append((name, _bad_code(path, number, raw)))
            continue
        ids.append(name)
        diagnoses.append(diagnosis)
    df = pd.DataFrame({"image_id": ids, "diagnosis": diagnoses}, dtype=object)
    df, dups = drop_duplicate_ids(df, path)
    return df, problems + list(dups)


def find_table(data_dir):
    """Returns the PH2 diagnosis table of `data_dir`, raising one line naming the expected file.

    Args:
        data_dir: the PH2 folder.
    """
    for name in TABLE_NAMES:
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    hint = ""
    if os.path.isfile(os.path.join(data_dir, "PH2_dataset.xlsx")):
        hint = " (PH2_dataset.xlsx is not read: save it as PH2_dataset.csv)"
    raise FileNotFoundError(f"{data_dir}: no {TABLE_NAMES[0]} (PH2 layout; or {', '.join(TABLE_NAMES[1:])}){hint}; "
                            "pass table=PATH")


def find_images_folder(data_dir=None, images=None):
    """Returns the `PH2 Dataset images` folder (one IMDxxx folder per case), raising one line when absent.

    Args:
        data_dir: the PH2 folder.
        images: the case folder itself, instead of `data_dir/PH2 Dataset images`.
    """
    if images is None:
        if data_dir is None:
            raise ValueError("Give data_dir (PH2 folder) or images (its 'PH2 Dataset images' folder)")
        images = os.path.join(data_dir, IMAGES_FOLDER)
        if not os.path.isdir(images):
            raise FileNotFoundError(f"{data_dir}: no '{IMAGES_FOLDER}/' folder (PH2 layout: "
                                    f"'{IMAGES_FOLDER}/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp'); pass images=DIR")
    images = os.fspath(images)
    if not os.path.isdir(images):
        raise FileNotFoundError(f"PH2 image folder not found: {images}")
    return images


def _find_file(folder, stem):
    """The image file `folder/stem.<ext>` (bmp first, as in the release), or None."""
    if not os.path.isdir(folder):
        return None
    by_name = {n.lower(): n for n in os.listdir(folder)}
    for ext in (".bmp",) + tuple(e for e in IMAGE_EXTENSIONS if e != ".bmp"):
        name = by_name.get((stem + ext).lower())
        if name is not None:
            return os.path.join(folder, name)
    return None


def _cases(images):
    """{IMDxxx: (image path or None, mask path or None)} over the case folders of `images`."""
    cases = {}
    for name in sorted(os.listdir(images)):
        case = os.path.join(images, name)
        if PH2_ID.fullmatch(name) and os.path.isdir(case):
            image = _find_file(os.path.join(case, f"{name}_Dermoscopic_Image"), name)
            mask = _find_file(os.path.join(case, f"{name}_lesion"), f"{name}_lesion")
            cases[name] = (image, mask)
    return cases


def _expected_image(images, image_id):
    return os.path.join(images, image_id, f"{image_id}_Dermoscopic_Image", f"{image_id}.bmp")


def load_ph2(data_dir=None, images=None, table=None):
    """Loads PH2 classification records with image paths; ids without an image are reported, not fatal.

    Args:
        data_dir: PH2 folder holding `PH2_dataset.txt` and `PH2 Dataset images/`.
        images: the `PH2 Dataset images` folder, instead of the one in data_dir.
        table: diagnosis table (`.txt`, `.csv` or `.tsv`), instead of the one in data_dir.

    Returns:
        (df, problems): records with `RECORD_COLUMNS` plus `diagnosis` (a name of `CLASSES`);
        `label` indexes `CLASSES`, `dx` is the HAM10000 class of `HAM10000_MAP`, `lesion_id` is
        the image id (one image per lesion), age NaN and sex / site "" (PH2 has no metadata).
        problems as [(image_id, reason)]: bad table rows, images missing, case folders the
        table does not list.
    """
    if table is None:
        if data_dir is None:
            raise ValueError("Give data_dir (PH2 folder) or table (PH2_dataset.txt) and images")
        table = find_table(data_dir)
    # Folder first: a missing image folder should fail before the table is parsed.
    images = find_images_folder(data_dir, images)
    df, problems = read_ph2_table(table)
    cases = _cases(images)
    paths = [cases.get(i, (None, None))[0] for i in df["image_id"]]
    found = [p is not None for p in paths]
    problems += [(i, f"no image file for {i}: expected {_expected_image(images, i)}")
                 for i, ok in zip(df["image_id"], found) if not ok]
    # A row left out for a bad code is already reported; its folder is not "unlisted" as well.
    listed = set(df["image_id"]) | {image_id for image_id, _ in problems}
    problems += [(i, f"case folder {os.path.join(images, i)} is not listed in {table} (no diagnosis); left out")
                 for i, (image, _) in cases.items() if i not in listed and image is not None]
    df = df.loc[found].reset_index(drop=True)
    df["image_path"] = [p for p in paths if p is not None]
    df["lesion_id"] = df["image_id"]
    df["label"] = df["diagnosis"].map(CLASSES.index)
    df["dx"] = df["diagnosis"].map(HAM10000_MAP)
    df["age"] = math.nan
    df["sex"] = ""
    df["site"] = ""
    return finish_records(df), problems


def ph2_pairs(data_dir=None, images=None):
    """Image / lesion-mask pairs of PH2 for segmentation evaluation (no diagnosis table needed).

    Args:
        data_dir: PH2 folder holding `PH2 Dataset images/`.
        images: the `PH2 Dataset images` folder, instead of the one in data_dir.

    Returns:
        (pairs, problems): `Pair`s sorted by id, and [(path, reason)] for cases without an image
        or a mask.
    """
    images = find_images_folder(data_dir, images)
    cases = _cases(images)
    if not cases:
        raise ValueError(f"{images}: no IMDxxx case folders (PH2 layout: IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp)")
    pairs, problems = [], []
    for image_id, (image, mask) in cases.items():
        case = os.path.join(images, image_id)
        if image is None:
            problems.append((case, f"no image {_expected_image(images, image_id)}"))
        elif mask is None:
            expected = os.path.join(case, f"{image_id}_lesion", f"{image_id}_lesion.bmp")
            problems.append((image, f"no mask for {image_id} (expected {expected})"))
        else:
            pairs.append(Pair(image_id, image, mask))
    if not pairs:
        raise ValueError(f"No PH2 case in {images} has both an image and a lesion mask")
    return pairs, problems
