"""PH2 records and pairs: the `||` table (with its legend), CSV / TSV exports, missing images, bad codes, layout errors."""

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinkeras.data.classification import RECORD_COLUMNS
from skinkeras.data.masks import read_mask
from skinkeras.data.ph2 import CLASSES, HAM10000_MAP, IMAGES_FOLDER, load_ph2, ph2_pairs, read_ph2_table
from skinkeras.data.synthetic import expected_image_count, make_synthetic

N = 8
SIZE = (48, 40)

# The real header, two data rows padded like the release, a bad code, an empty code, then the legend.
REAL_SNIPPET = """\
|| Name ||  Histological Diagnosis || Clinical Diagnosis || Asymmetry || Pigment Network || Dots/Globules || Streaks || Regression Areas || Blue-Whitish Veil || White || Red || Light-Brown || Dark-Brown || Blue-Gray || Black ||
|| IMD003 ||                        ||          0         ||     0     ||         T       ||       A       ||    A    ||         A        ||         A         ||   ||  ||     X       ||            ||           ||       ||
|| IMD009 ||                        ||          1         ||     1     ||        AT       ||       T       ||    A    ||         A        ||         A         ||   ||  ||     X       ||     X      ||           ||       ||
|| IMD058 ||        Melanoma        ||          2         ||     2     ||        AT       ||      AT       ||    P    ||         P        ||         P         || X ||  ||     X       ||     X      ||     X     ||   X   ||
|| IMD101 ||                        ||          7         ||     0     ||         T       ||       A       ||    A    ||         A        ||         A         ||   ||  ||     X       ||            ||           ||       ||
|| IMD102 ||                        ||                    ||     0     ||         T       ||       A       ||    A    ||         A        ||         A         ||   ||  ||     X       ||            ||           ||       ||

Legends:

Clinical Diagnosis:
\t0 - Common Nevus;
\t1 - Atypical Nevus;
\t2 - Melanoma.

Asymmetry:
\t0 - Fully Symmetric;
\t1 - Symetric in 1 axe;
\t2 - Fully Asymmetric.
"""


@pytest.fixture(scope="module")
def ph2(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph2")
    calls = []
    folder = make_synthetic(out, n=N, seed=0, image_size=SIZE, datasets=("ph2",),
                            progress=lambda: calls.append(1))["ph2"]
    assert len(calls) == expected_image_count(N, ("ph2",)) == N
    return Path(folder)


def test_synthetic_layout_is_the_official_one(ph2):
    text = (ph2 / "PH2_dataset.txt").read_text()
    assert text.startswith(REAL_SNIPPET.splitlines()[0] + "\n")
    assert "Legends:" in text and "0 - Common Nevus;" in text
    cases = sorted((ph2 / IMAGES_FOLDER).iterdir())
    assert len(cases) == N
    for case in cases:
        name = case.name
        with Image.open(case / f"{name}_Dermoscopic_Image" / f"{name}.bmp") as img:
            assert img.format == "BMP" and img.mode == "RGB" and img.size == SIZE
        with Image.open(case / f"{name}_lesion" / f"{name}_lesion.bmp") as mask:
            assert mask.format == "BMP" and set(np.unique(np.asarray(mask))) <= {0, 255}
    assert any((case / f"{case.name}_roi").is_dir() for case in cases)


def test_loader_gives_records_with_ph2_and_ham10000_labels(ph2):
    df, problems = load_ph2(ph2)
    assert problems == []
    assert len(df) == N and list(df.columns) == list(RECORD_COLUMNS) + ["diagnosis"]
    assert set(df["diagnosis"]) == set(CLASSES)  # every class from n >= 6
    assert (df["label"] == df["diagnosis"].map(CLASSES.index)).all()
    assert (df["dx"] == df["diagnosis"].map(HAM10000_MAP)).all() and set(df["dx"]) == {"nv", "mel"}
    assert (df["lesion_id"] == df["image_id"]).all()
    # PH2 has no metadata: missing, not invented.
    assert df["age"].isna().all() and (df["sex"] == "").all() and (df["site"] == "").all()
    for row in df.itertuples():
        assert row.image_path.endswith(os.path.join(f"{row.image_id}_Dermoscopic_Image", f"{row.image_id}.bmp"))
    table, _ = read_ph2_table(ph2 / "PH2_dataset.txt")
    assert list(table["image_id"]) == list(df["image_id"])


def test_pairs_load_with_matching_sizes_and_skip_the_roi_masks(ph2):
    pairs, problems = ph2_pairs(ph2)
    assert problems == [] and len(pairs) == N
    assert [p.image_id for p in pairs] == sorted(p.image_id for p in pairs)
    for pair in pairs:
        assert pair.mask_path.endswith(f"{pair.image_id}_lesion.bmp")
        mask = read_mask(pair.mask_path)
        with Image.open(pair.image_path) as img:
            assert mask.shape == (img.size[1], img.size[0])
        assert 0 < mask.mean() < 1


def test_pairs_report_a_case_without_mask(ph2, tmp_path):
    shutil.copytree(ph2, tmp_path / "ph2")
    case = sorted((tmp_path / "ph2" / IMAGES_FOLDER).iterdir())[2]
    shutil.rmtree(case / f"{case.name}_lesion")
    pairs, problems = ph2_pairs(tmp_path / "ph2")
    assert len(pairs) == N - 1 and case.name not in {p.image_id for p in pairs}
    assert len(problems) == 1 and "no mask" in problems[0][1] and f"{case.name}_lesion.bmp" in problems[0][1]


def test_real_table_format_with_legend(tmp_path):
    path = tmp_path / "PH2_dataset.txt"
    path.write_text(REAL_SNIPPET)
    df, problems = read_ph2_table(path)
    assert list(df["image_id"]) == ["IMD003", "IMD009", "IMD058"]
    assert list(df["diagnosis"]) == ["common_nevus", "atypical_nevus", "melanoma"]
    reasons = dict(problems)
    assert set(reasons) == {"IMD101", "IMD102"}
    assert str(path) in reasons["IMD101"] and "line 5" in reasons["IMD101"] and "'7'" in reasons["IMD101"]
    assert "line 6" in reasons["IMD102"] and "empty" in reasons["IMD102"]
    assert all("\n" not in r for r in reasons.values())


@pytest.mark.parametrize("name, sep", [("PH2_dataset.csv", ","), ("PH2_dataset.tsv", "\t")])
def test_csv_and_tsv_exports(tmp_path, name, sep):
    rows = [[" name ", "Histological Diagnosis", "CLINICAL  DIAGNOSIS", "Asymmetry"],
            ["IMD003", "", "0", "0"], ["IMD009", "", "1", "1"], ["IMD058", "Melanoma", "2.0", "2"],
            ["IMD060", "", "melanoma", "2"], ["IMD101", "", "x", "0"], ["IMD1O2", "", "0", "0"]]
    path = tmp_path / name
    path.write_text("\n".join(sep.join(r) for r in rows) + "\n")
    df, problems = read_ph2_table(path)
    assert dict(zip(df["image_id"], df["diagnosis"])) == {
        "IMD003": "common_nevus", "IMD009": "atypical_nevus", "IMD058": "melanoma", "IMD060": "melanoma"}
    reasons = dict(problems)
    assert set(reasons) == {"IMD101", "IMD1O2"}
    assert "line 6" in reasons["IMD101"] and "'x'" in reasons["IMD101"]
    assert "IMDxxx" in reasons["IMD1O2"]


def test_csv_without_the_diagnosis_column_is_one_line(tmp_path):
    path = tmp_path / "PH2_dataset.csv"
    path.write_text("Name,Diagnosis\nIMD003,0\n")
    with pytest.raises(ValueError) as err:
        read_ph2_table(path)
    assert "Clinical Diagnosis" in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_bad_code_and_missing_image_are_problem_rows(ph2, tmp_path):
    root = tmp_path / "ph2"
    shutil.copytree(ph2, root)
    lines = (root / "PH2_dataset.txt").read_text().splitlines(keepends=True)
    bad_id = lines[1].split("||")[1].strip()
    cells = lines[1].split("||")
    cells[3] = "   9   "
    lines[1] = "||".join(cells)
    (root / "PH2_dataset.txt").write_text("".join(lines))
    gone = sorted((root / IMAGES_FOLDER).iterdir())[4]
    os.remove(gone / f"{gone.name}_Dermoscopic_Image" / f"{gone.name}.bmp")
    df, problems = load_ph2(root)
    assert len(df) == N - 2 and not {bad_id, gone.name} & set(df["image_id"])
    reasons = dict(problems)
    assert set(reasons) == {bad_id, gone.name}
    assert "line 2" in reasons[bad_id] and "'9'" in reasons[bad_id]
    assert "no image" in reasons[gone.name] and f"{gone.name}.bmp" in reasons[gone.name]


def test_case_folder_missing_from_the_table_is_reported(ph2, tmp_path):
    table = tmp_path / "PH2_dataset.csv"
    df, _ = read_ph2_table(ph2 / "PH2_dataset.txt")
    codes = {c: str(i) for i, c in enumerate(CLASSES)}
    table.write_text("Name,Clinical Diagnosis\n" + "".join(
        f"{i},{codes[d]}\n" for i, d in zip(df["image_id"][1:], df["diagnosis"][1:])))
    loaded, problems = load_ph2(images=ph2 / IMAGES_FOLDER, table=table)
    assert list(loaded["image_id"]) == list(df["image_id"][1:])
    assert len(problems) == 1 and problems[0][0] == df["image_id"][0] and "not listed" in problems[0][1]


def test_not_a_ph2_folder_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_ph2(tmp_path)
    assert "PH2_dataset.txt" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "PH2_dataset.xlsx").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as err:
        load_ph2(tmp_path)
    assert "PH2_dataset.csv" in str(err.value)
    (tmp_path / "PH2_dataset.txt").write_text(REAL_SNIPPET)
    for call in (load_ph2, ph2_pairs):
        with pytest.raises(FileNotFoundError) as err:
            call(tmp_path)
        assert f"'{IMAGES_FOLDER}/'" in str(err.value) and "\n" not in str(err.value)
    path = tmp_path / "other.txt"
    path.write_text("|| Image || Diagnosis ||\n|| IMD003 || 0 ||\n")
    with pytest.raises(ValueError) as err:
        read_ph2_table(path)
    assert "Clinical Diagnosis" in str(err.value) and "\n" not in str(err.value)


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_else_is_generated(ph2, tmp_path):
    folders = make_synthetic(tmp_path, n=N, seed=0, image_size=SIZE, datasets=("isic2017", "ph2"))
    assert _digests(folders["ph2"]) == _digests(ph2)
    other = make_synthetic(tmp_path / "other", n=N, seed=1, image_size=SIZE, datasets=("ph2",))["ph2"]
    assert _digests(other) != _digests(ph2)
