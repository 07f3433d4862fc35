"""ISIC 2019 records: ground truth + metadata + images, UNK / unlabelled rows, missing images; the real CSVs."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from skinkeras.data.classification import RECORD_COLUMNS
from skinkeras.data.ham10000 import CLASSES as HAM_CLASSES
from skinkeras.data.isic2019 import (
    CLASSES, GROUND_TRUTH_CSV, HAM10000_TO_ISIC2019, IMAGE_FOLDER, ISIC2019_TO_HAM10000, METADATA_CSV,
    load_isic2019, read_isic2019_tables,
)
from skinkeras.data.metadata import SITES
from skinkeras.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def isic(tmp_path_factory):
    out = tmp_path_factory.mktemp("isic2019")
    return make_synthetic(out, n=60, seed=0, image_size=(64, 48), datasets=("isic2019",))["isic2019"]


def test_loader_gives_records_with_labels_and_paths(isic):
    df, problems = load_isic2019(isic)
    assert problems == []
    assert len(df) == 60 and list(df.columns) == list(RECORD_COLUMNS)
    assert (df["label"] == df["dx"].map(CLASSES.index)).all()
    assert set(df["dx"]) == set(CLASSES)
    assert all(os.path.basename(p) == f"{i}.jpg" for i, p in zip(df["image_id"], df["image_path"]))
    assert all(os.path.isfile(p) for p in df["image_path"])
    assert set(df["site"]) <= set(SITES) | {""}
    meta = pd.read_csv(os.path.join(isic, METADATA_CSV), dtype=str, keep_default_na=False).set_index("image")
    meta = meta.loc[df["image_id"]]
    no_lesion = (meta["lesion_id"] == "").to_numpy()
    assert no_lesion.any()  # the generator leaves some ids empty, like the real file
    assert (df["lesion_id"][no_lesion] == df["image_id"][no_lesion]).all()
    np.testing.assert_array_equal(df["age"].isna(), meta["age_approx"] == "")
    np.testing.assert_array_equal(df["site"] == "", meta["anatom_site_general"] == "")
    np.testing.assert_array_equal(df["sex"] == "", meta["sex"] == "")


def test_unk_and_unlabelled_rows_are_reported_and_left_out(isic, tmp_path):
    gt = pd.read_csv(os.path.join(isic, GROUND_TRUTH_CSV), dtype=str)
    first, second, third = gt["image"].iloc[:3]
    gt.loc[0, list(CLASSES)] = "0.0"
    gt.loc[0, "UNK"] = "1.0"
    gt.loc[1, list(CLASSES)] = "0.0"
    gt.loc[2, ["MEL", "NV"]] = "1.0"
    gt.to_csv(tmp_path / "gt.csv", index=False)
    problems = []
    df = read_isic2019_tables(tmp_path / "gt.csv", os.path.join(isic, METADATA_CSV), problems)
    assert len(df) == 57 and not {first, second, third} & set(df["image_id"])
    reasons = dict(problems)
    assert "UNK" in reasons[first] and "no positive" in reasons[second] and "several" in reasons[third]
    loaded, load_problems = load_isic2019(isic, ground_truth_csv=tmp_path / "gt.csv")
    assert len(loaded) == 57 and dict(load_problems) == reasons


def test_id_without_image_is_reported_and_left_out(isic, tmp_path):
    images = tmp_path / "imgs"
    shutil.copytree(os.path.join(isic, IMAGE_FOLDER), images)
    gone = sorted(os.listdir(images))[7]
    os.remove(images / gone)
    df, problems = load_isic2019(isic, images=images)
    gone_id = os.path.splitext(gone)[0]
    assert len(df) == 59 and gone_id not in set(df["image_id"])
    assert [p[0] for p in problems] == [gone_id]


def test_missing_image_folder_or_csv_is_one_line(isic, tmp_path):
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):
        shutil.copy(os.path.join(isic, name), tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_isic2019(tmp_path)
    assert IMAGE_FOLDER in str(err.value) and "\n" not in str(err.value)
    os.remove(tmp_path / METADATA_CSV)
    with pytest.raises(FileNotFoundError) as err:
        load_isic2019(tmp_path, images=os.path.join(isic, IMAGE_FOLDER))
    assert METADATA_CSV in str(err.value) and "\n" not in str(err.value)


def test_tables_without_metadata_have_everything_missing(isic):
    df = read_isic2019_tables(os.path.join(isic, GROUND_TRUTH_CSV))
    assert len(df) == 60 and df["age"].isna().all() and (df["sex"] == "").all() and (df["site"] == "").all()
    assert (df["lesion_id"] == df["image_id"]).all()


def test_class_mapping_between_datasets():
    assert set(ISIC2019_TO_HAM10000) == set(CLASSES)
    assert ISIC2019_TO_HAM10000["SCC"] is None
    assert set(HAM10000_TO_ISIC2019) == set(HAM_CLASSES)
    assert all(ISIC2019_TO_HAM10000[v] == k for k, v in HAM10000_TO_ISIC2019.items())
    assert HAM10000_TO_ISIC2019["akiec"] == "AK"


@pytest.mark.shared_data
def test_real_isic2019_tables(shared_data):
    folder = shared_data / "isic2019"
    gt = pd.read_csv(folder / GROUND_TRUTH_CSV)
    meta = pd.read_csv(folder / METADATA_CSV, dtype=str, keep_default_na=False)
    assert gt["UNK"].sum() == 0
    problems = []
    df = read_isic2019_tables(folder / GROUND_TRUTH_CSV, folder / METADATA_CSV, problems)
    assert len(df) == 25331 and problems == []
    assert set(df["dx"]) == set(CLASSES)
    assert df["dx"].value_counts()["NV"] == 12875
    assert df["age"].isna().sum() == (meta["age_approx"] == "").sum() > 0
    assert (df["sex"] == "").sum() == (meta["sex"] == "").sum() > 0
    assert (df["site"] == "").sum() == (meta["anatom_site_general"] == "").sum() > 0
    assert (df["lesion_id"] != "").all()
    # The shared folder has CSVs only: the loader must stop with one line naming the image folder.
    with pytest.raises(FileNotFoundError, match=IMAGE_FOLDER):
        load_isic2019(folder)
