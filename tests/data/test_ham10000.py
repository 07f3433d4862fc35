"""HAM10000 records: official layout (part_1 / part_2), missing images, bad files; the real CSV."""

import os
import shutil

import pandas as pd
import pytest

from skinkeras.data.classification import RECORD_COLUMNS, split_records
from skinkeras.data.ham10000 import CLASSES, IMAGE_FOLDERS, load_ham10000, read_ham10000_table
from skinkeras.data.metadata import HAM10000_SITE_MAP
from skinkeras.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    out = tmp_path_factory.mktemp("ham")
    return make_synthetic(out, n=60, seed=0, image_size=(64, 48), datasets=("ham10000",))["ham10000"]


def test_loader_gives_records_with_labels_and_paths(ham):
    df, problems = load_ham10000(ham)
    assert problems == []
    assert len(df) == 60
    assert list(df.columns[: len(RECORD_COLUMNS)]) == list(RECORD_COLUMNS)
    assert (df["label"] == df["dx"].map(CLASSES.index)).all()
    assert set(df["dx"]) == set(CLASSES)
    for _, row in df.iterrows():
        assert os.path.isfile(row.image_path)
        assert os.path.splitext(os.path.basename(row.image_path))[0] == row.image_id
    assert df["age"].dtype == float
    assert (df["lesion_id"] != "").all()
    assert (df["site"] == df["localization"].map(HAM10000_SITE_MAP)).all()
    assert set(df["sex"]) <= {"male", "female", ""}


def test_images_split_across_part_folders_are_all_found(ham):
    df, _ = load_ham10000(ham)
    parts = df["image_path"].map(lambda p: os.path.basename(os.path.dirname(p))).value_counts()
    assert parts.get(IMAGE_FOLDERS[0], 0) > 0 and parts.get(IMAGE_FOLDERS[1], 0) > 0
    assert parts.sum() == 60
    explicit, _ = load_ham10000(images=[os.path.join(ham, IMAGE_FOLDERS[0]), os.path.join(ham, IMAGE_FOLDERS[1])],
                                metadata_csv=os.path.join(ham, "HAM10000_metadata.csv"))
    pd.testing.assert_frame_equal(explicit, df)


def test_id_without_image_is_reported_and_left_out(ham, tmp_path):
    folder = tmp_path / "HAM10000_images"  # the merged single-folder layout of many copies
    for part in IMAGE_FOLDERS[:2]:
        shutil.copytree(os.path.join(ham, part), folder, dirs_exist_ok=True)
    shutil.copy(os.path.join(ham, "HAM10000_metadata.csv"), tmp_path)
    gone = sorted(os.listdir(folder))[5]
    os.remove(folder / gone)
    df, problems = load_ham10000(tmp_path)
    gone_id = os.path.splitext(gone)[0]
    assert len(df) == 59 and gone_id not in set(df["image_id"])
    assert len(problems) == 1 and problems[0][0] == gone_id and "no image" in problems[0][1]


def test_empty_lesion_id_falls_back_to_image_id(ham, tmp_path):
    meta = pd.read_csv(os.path.join(ham, "HAM10000_metadata.csv"), dtype=str, keep_default_na=False)
    meta.loc[0, "lesion_id"] = ""
    meta.loc[1, "age"] = ""
    meta.loc[1, "sex"] = "unknown"
    meta.to_csv(tmp_path / "meta.csv", index=False)
    df, _ = load_ham10000(ham, metadata_csv=tmp_path / "meta.csv")
    assert df.loc[0, "lesion_id"] == df.loc[0, "image_id"]
    assert pd.isna(df.loc[1, "age"]) and df.loc[1, "sex"] == ""


def test_unknown_dx_names_the_value_and_the_file(ham, tmp_path):
    meta = pd.read_csv(os.path.join(ham, "HAM10000_metadata.csv"), dtype=str, keep_default_na=False)
    meta.loc[3, "dx"] = "scc"
    meta.to_csv(tmp_path / "meta.csv", index=False)
    with pytest.raises(ValueError) as err:
        load_ham10000(ham, metadata_csv=tmp_path / "meta.csv")
    assert "'scc'" in str(err.value) and "meta.csv" in str(err.value) and "akiec" in str(err.value)


def test_missing_csv_or_image_folder_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_ham10000(tmp_path)
    assert "HAM10000_metadata.csv" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx,dx_type,age,sex,localization\n")
    with pytest.raises(FileNotFoundError) as err:
        load_ham10000(tmp_path)
    assert "HAM10000_images_part_1" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.shared_data
def test_real_ham10000(shared_data):
    folder = shared_data / "ham10000"
    table, problems = read_ham10000_table(folder / "HAM10000_metadata.csv")
    assert len(table) == 10015 and problems == []
    df, problems = load_ham10000(folder, images=folder / "HAM10000_images")
    assert len(df) == 10012 and len(problems) == 3
    assert {p[0] for p in problems} == set(table["image_id"]) - set(df["image_id"])
    assert df["dx"].value_counts().to_dict() == {
        "nv": 6703, "mel": 1112, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115}
    assert (df["site"] == "").sum() == (df["localization"] == "unknown").sum()
    split = split_records(df, seed=0)
    assert split.groupby("lesion_id")["subset"].nunique().max() == 1
    assert (pd.crosstab(split["dx"], split["subset"]) > 0).all().all()
    fractions = split["subset"].value_counts(normalize=True)
    assert fractions["train"] == pytest.approx(0.7, abs=0.01)
    assert fractions["val"] == pytest.approx(0.15, abs=0.01)


def test_ground_truth_segdir_multiplies_each_image_by_its_own_mask(ham, tmp_path):
    import numpy as np
    from PIL import Image

    from skinkeras.data.ham10000 import MASK_FOLDER, ground_truth_segdir
    from skinkeras.data.masks import mask_name

    data = tmp_path / "ham"
    shutil.copytree(ham, data)
    masks = data / MASK_FOLDER
    first, second, *_ = sorted(p.name for p in masks.iterdir())
    (masks / first).unlink()  # no mask: skipped and listed, not fatal
    Image.open(masks / second).resize((20, 15), Image.NEAREST).save(masks / second)  # another size: resized
    segdir, skipped = ground_truth_segdir(data, tmp_path / "seg")
    ids = [i for i, _ in skipped]
    assert ids == [first.replace("_segmentation.png", "")] and first in skipped[0][1]
    df, _ = load_ham10000(data)
    resized = second.replace("_segmentation.png", "")
    row = df[~df.image_id.isin([ids[0], resized])].iloc[0]
    image = np.asarray(Image.open(row.image_path).convert("RGB")).astype(int)
    mask = np.asarray(Image.open(masks / mask_name(row.image_id))) > 128
    written = np.asarray(Image.open(segdir.segmented_path(row.image_id))).astype(int)
    assert written.shape == image.shape and np.abs(written - image * mask[..., None]).mean() < 3  # JPEG q95
    assert (np.asarray(Image.open(segdir.mask_path(row.image_id))) > 0).tolist() == mask.tolist()
    original = df.set_index("image_id").image_path[resized]
    assert Image.open(segdir.segmented_path(resized)).size == Image.open(original).size
    assert sum(segdir.has(i) for i in df.image_id) == len(df) - 1
