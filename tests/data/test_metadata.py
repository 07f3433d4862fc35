"""Unified site / sex vocabulary and the metadata encoder (training-only statistics, missing values, JSON state)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from skinkeras.data.metadata import (
    HAM10000_SITE_MAP, SEXES, SITES, MetadataEncoder, normalize_sex, normalize_site, sample_availability,
)
from skinkeras.data.synthetic import HAM10000_LOCALIZATIONS, ISIC2019_SITES

N_FEATURES = 1 + len(SEXES) + len(SITES)


@pytest.mark.parametrize("raw, unified", [
    ("back", "posterior torso"), ("chest", "anterior torso"), ("abdomen", "anterior torso"),
    ("face", "head/neck"), ("ear", "head/neck"), ("neck", "head/neck"), ("scalp", "head/neck"),
    ("hand", "upper extremity"), ("foot", "lower extremity"), ("acral", "palms/soles"),
    ("genital", "oral/genital"), ("trunk", "torso"), ("lower extremity", "lower extremity"),
    ("posterior torso", "posterior torso"), ("head/neck", "head/neck"), ("lateral torso", "lateral torso"),
    ("Lower_Extremity", "lower extremity"), ("  Palms/Soles ", "palms/soles"),
    ("unknown", ""), ("", ""), (None, ""), (float("nan"), ""),
])
def test_site_spellings_of_both_datasets_map_to_one_vocabulary(raw, unified):
    assert normalize_site(raw) == unified


def test_every_site_value_of_both_datasets_is_covered():
    for value in HAM10000_LOCALIZATIONS + ISIC2019_SITES:
        site = normalize_site(value)
        assert site in SITES or (value == "unknown" and site == "")
    assert set(HAM10000_SITE_MAP) == set(HAM10000_LOCALIZATIONS)
    assert set(ISIC2019_SITES) <= set(SITES)


def test_unknown_site_raises_with_the_valid_list():
    with pytest.raises(ValueError) as err:
        normalize_site("elbow", source="meta.csv")
    msg = str(err.value)
    assert "'elbow'" in msg and "meta.csv" in msg and "head/neck" in msg and "back" in msg
    with pytest.raises(ValueError, match="head/neck"):
        MetadataEncoder(50.0, 10.0).encode_one(site="elbow")


def test_sex_normalisation():
    assert normalize_sex("Male") == "male" and normalize_sex("female") == "female"
    assert normalize_sex("unknown") == "" and normalize_sex("") == "" and normalize_sex(None) == ""
    with pytest.raises(ValueError, match="male, female"):
        MetadataEncoder(50.0, 10.0).encode_one(sex="x")


def test_encoder_uses_training_statistics_only():
    train = pd.DataFrame({"age": [20.0, 40.0, 60.0, np.nan], "sex": ["male"] * 4, "site": ["back"] * 4})
    val = pd.DataFrame({"age": [80.0], "sex": ["female"], "site": ["head/neck"]})
    enc = MetadataEncoder().fit(train)
    mean, std = 40.0, float(np.std([20.0, 40.0, 60.0]))
    assert enc.age_mean == pytest.approx(mean) and enc.age_std == pytest.approx(std)
    feats, avail = enc.transform(val)
    assert feats.dtype == np.float32 and feats.shape == (1, N_FEATURES) and avail.shape == (1, 3)
    assert feats[0, 0] == pytest.approx((80.0 - mean) / std)
    names = enc.feature_names()
    assert len(names) == N_FEATURES
    assert feats[0, names.index("sex=female")] == 1 and feats[0, names.index("site=head/neck")] == 1
    assert feats[0].sum() == pytest.approx(feats[0, 0] + 2)
    np.testing.assert_array_equal(avail, [[1, 1, 1]])


def test_missing_values_are_zeros_with_availability_zero():
    enc = MetadataEncoder(50.0, 10.0)
    df = pd.DataFrame({"age": [np.nan, 50.0, 30.0], "sex": ["", "unknown", "male"], "site": ["unknown", "", "acral"]})
    feats, avail = enc.transform(df)
    np.testing.assert_array_equal(feats[0], 0)
    np.testing.assert_array_equal(avail, [[0, 0, 0], [1, 0, 0], [1, 1, 1]])
    assert feats[1, 0] == 0 and feats[1, 1:].sum() == 0  # age at the mean is 0 but available
    np.testing.assert_array_equal(sample_availability(avail), [[0], [1], [1]])
    assert sample_availability(avail).dtype == np.float32
    np.testing.assert_array_equal(MetadataEncoder.sample_availability(avail), sample_availability(avail))


def test_encode_one_matches_transform_and_accepts_both_spellings():
    enc = MetadataEncoder(45.0, 15.0)
    f_ham, a_ham = enc.encode_one(age=60, sex="male", site="back")
    f_isic, a_isic = enc.encode_one(age=60, sex="male", site="posterior torso")
    np.testing.assert_array_equal(f_ham, f_isic)
    f_df, a_df = enc.transform(pd.DataFrame({"age": [60], "sex": ["male"], "site": ["back"]}))
    np.testing.assert_array_equal(f_ham, f_df)
    np.testing.assert_array_equal(a_ham, a_df)
    f_none, a_none = enc.encode_one()
    assert f_none.shape == (1, N_FEATURES) and not f_none.any() and not a_none.any()


def test_to_dict_round_trip_through_json():
    enc = MetadataEncoder().fit(pd.DataFrame({"age": [30, 50, 70], "sex": ["male"] * 3, "site": [""] * 3}))
    back = MetadataEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    df = pd.DataFrame({"age": [55.0, np.nan], "sex": ["female", ""], "site": ["scalp", "oral/genital"]})
    for a, b in zip(enc.transform(df), back.transform(df)):
        np.testing.assert_array_equal(a, b)
    state = enc.to_dict()
    state["sites"] = state["sites"][:-1]
    with pytest.raises(ValueError, match="vocabulary"):
        MetadataEncoder.from_dict(state)


def test_degenerate_ages_still_encode():
    enc = MetadataEncoder().fit(pd.DataFrame({"age": [np.nan, np.nan], "sex": ["", ""], "site": ["", ""]}))
    assert math.isfinite(enc.age_std) and enc.age_std > 0
    with pytest.raises(RuntimeError, match="fit"):
        MetadataEncoder().transform(pd.DataFrame({"age": [1.0], "sex": [""], "site": [""]}))


@pytest.mark.shared_data
def test_site_mapping_agrees_with_the_isic_archive_on_ham10000_images(shared_data):
    # ISIC 2019 lists every HAM10000 image with the archive's own coarse site: ours must match wherever it has one.
    ham = pd.read_csv(shared_data / "ham10000" / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    isic = pd.read_csv(shared_data / "isic2019" / "ISIC_2019_Training_Metadata.csv", dtype=str,
                       keep_default_na=False)
    both = ham.merge(isic, left_on="image_id", right_on="image")
    assert len(both) == len(ham)
    ours = both["localization"].map(normalize_site)
    theirs = both["anatom_site_general"].map(normalize_site)
    known = theirs != ""
    assert known.sum() > 8000
    assert (ours[known] == theirs[known]).all()
    # Where the archive has no site, ours is missing too or one of the two documented extras.
    assert set(ours[~known]) <= {"", "torso", "oral/genital"}
