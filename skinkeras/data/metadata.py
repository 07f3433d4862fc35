"""Clinical metadata (age, sex, lesion site) of HAM10000 and ISIC 2019 in one vocabulary, and its encoder.

Unified site vocabulary `SITES`: the ISIC 2019 `anatom_site_general` names, plus "torso" for
HAM10000's unspecified "trunk". HAM10000 `localization` values map onto it exactly as the ISIC
archive itself maps them: the ISIC 2019 metadata file holds all 10015 HAM10000 images, and the
cross-tabulation of the two files gives

    HAM10000 localization                 unified site
    abdomen, chest                    ->  anterior torso
    back                              ->  posterior torso
    face, ear, neck, scalp            ->  head/neck
    hand                              ->  upper extremity
    foot                              ->  lower extremity
    acral                             ->  palms/soles
    upper / lower extremity           ->  upper / lower extremity
    genital                           ->  oral/genital   (the archive leaves these 48 empty)
    trunk                             ->  torso          (the archive leaves these 1404 empty)
    unknown, empty                    ->  missing

"trunk" gets its own entry rather than being dropped because it is 14% of HAM10000 and still says
"not a limb, not the head". ISIC 2019 names map to themselves. Matching ignores case, surrounding
spaces and underscores ("lower_extremity"). Sex: "male" / "female"; "unknown" and empty are missing.

The encoder turns (age, sex, site) into the feature vector of the metadata branch
`[age_scaled, sex one-hot (2), site one-hot (len(SITES))]`, with zeros for a missing value, and a
per-group availability mask (age, sex, site), so the model can apply the availability mask of
paper Eq. 8. Age statistics come from the training split only.
"""

from __future__ import annotations

import math

import numpy as np

SITES = (
    "anterior torso", "head/neck", "lateral torso", "lower extremity", "oral/genital",
    "palms/soles", "posterior torso", "upper extremity", "torso",
)
SEXES = ("male", "female")
GROUPS = ("age", "sex", "site")

# HAM10000 localization -> unified site ("" = missing); see the module docstring for why.
HAM10000_SITE_MAP = {
    "abdomen": "anterior torso", "chest": "anterior torso", "back": "posterior torso",
    "face": "head/neck", "ear": "head/neck", "neck": "head/neck", "scalp": "head/neck",
    "hand": "upper extremity", "foot": "lower extremity", "acral": "palms/soles",
    "upper extremity": "upper extremity", "lower extremity": "lower extremity",
    "genital": "oral/genital", "trunk": "torso", "unknown": "",
}
# ISIC 2019 anatom_site_general -> unified site (identity; listed so the accepted names are explicit).
ISIC2019_SITE_MAP = {s: s for s in SITES if s != "torso"}

_MISSING = {"", "unknown", "nan", "none", "na", "n/a"}
_SITE_LOOKUP = {**{s: s for s in SITES}, **HAM10000_SITE_MAP, **ISIC2019_SITE_MAP}


def _key(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).replace("_", " ").split()).lower()


def valid_site_names():
    """All accepted site spellings (unified, HAM10000 and ISIC 2019 names), sorted."""
    return sorted(k for k in _SITE_LOOKUP if k not in _MISSING)


def _lookup(value, table, what, valid, source=None):
    """Maps a spelling through `table`; "" when missing; a ValueError naming the value and the valid ones.

    Args:
        value: raw value; None, NaN, "", "unknown" mean missing.
        table: normalised key -> canonical value.
        what: what the value is, for the error.
        valid: the valid spellings, listed in the error.
        source: optional file name, quoted in the error.
    """
    key = _key(value)
    if key in _MISSING:
        return ""
    if key not in table:
        where = f" in {source}" if source else ""
        raise ValueError(f"Unknown {what} {value!r}{where}; valid: {valid}")
    return table[key]


def normalize_site(value, source=None):
    """Returns the unified site name of a HAM10000 / ISIC 2019 / unified spelling, "" when missing.

    Args:
        value: site string; None, NaN, "", "unknown" mean missing.
        source: optional file name, quoted in the error for an unknown value.
    """
    return _lookup(value, _SITE_LOOKUP, "lesion site", ", ".join(valid_site_names()), source)


def normalize_sex(value, source=None):
    """Returns "male" / "female", or "" when missing.

    Args:
        value: sex string; None, NaN, "", "unknown" mean missing.
        source: optional file name, quoted in the error for an unknown value.
    """
    return _lookup(value, {s: s for s in SEXES}, "sex", f"{', '.join(SEXES)} (or empty/unknown)", source)


# Plausible ages in years; a value outside (a typo, -5, 300) is treated as missing, never trained on.
AGE_RANGE = (0.0, 120.0)


def normalize_age(value):
    """Returns the age as float, NaN when missing, not a number, or outside AGE_RANGE.

    Args:
        value: number or string; "", "unknown", None are missing.
    """
    try:
        age = float(value)
    except (TypeError, ValueError):
        return math.nan
    return age if math.isfinite(age) and AGE_RANGE[0] <= age <= AGE_RANGE[1] else math.nan


def record_metadata(ids, ages, sexes, sites, source):
    """Normalises the metadata columns of a dataset's rows; bad values become missing and are reported.

    Unknown sex or site spellings and ages outside AGE_RANGE do not stop a
    run: the value is treated as missing (its availability is 0) and the row
    is kept; each such value is returned as a note for skipped.csv.

    Args:
        ids: image ids.
        ages: raw ages.
        sexes: raw sex values.
        sites: raw site values.
        source: the CSV, named in the notes.

    Returns:
        (ages, sexes, sites, notes [(image_id, reason)]).
    """
    out_ages, out_sexes, out_sites, notes = [], [], [], []
    for image_id, age, sex, site in zip(ids, ages, sexes, sites):
        value = normalize_age(age)
        if math.isnan(value) and _key(age) not in _MISSING and _is_number(age):
            notes.append((image_id, f"age {age} outside {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} in {source}: "
                                    "treated as missing (image kept)"))
        out_ages.append(value)
        for raw, normalise, out, what in ((sex, normalize_sex, out_sexes, "sex"),
                                          (site, normalize_site, out_sites, "site")):
            try:
                out.append(normalise(raw))
            except ValueError:
                out.append("")
                notes.append((image_id, f"unknown {what} {raw!r} in {source}: treated as missing (image kept)"))
    return out_ages, out_sexes, out_sites, notes


def _is_number(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def sample_availability(avail):
    """Per-sample availability mask (N, 1): 1 where any metadata group is available, else 0.

    Args:
        avail: per-group availability (N, 3) from `MetadataEncoder.transform`.
    """
    avail = np.asarray(avail, np.float32)
    return (avail.max(axis=1, keepdims=True) > 0).astype(np.float32)


class MetadataEncoder:
    """Encodes age, sex and site into `[age_scaled, sex one-hot, site one-hot]` plus availability.

    Args:
        age_mean: mean age of the training rows (set by `fit`).
        age_std: standard deviation of the training ages (set by `fit`; 1 when undefined).
    """

    def __init__(self, age_mean=None, age_std=None):
        self.age_mean = age_mean
        self.age_std = age_std

    @property
    def n_features(self):
        """Length of the feature vector: 1 + len(SEXES) + len(SITES)."""
        return 1 + len(SEXES) + len(SITES)

    def feature_names(self):
        """Names of the feature columns, in order."""
        return ["age"] + [f"sex={s}" for s in SEXES] + [f"site={s}" for s in SITES]

    def fit(self, df):
        """Takes the age mean / std from `df`; pass the training split only, so no statistic leaks from val/test.

        Args:
            df: records with an `age` column (NaN = missing).
        """
        ages = np.array([normalize_age(a) for a in df["age"]], np.float64)
        ages = ages[np.isfinite(ages)]
        # No known age at all still has to give a usable (all-zero) age feature.
        self.age_mean = float(ages.mean()) if ages.size else 0.0
        std = float(ages.std()) if ages.size > 1 else 0.0
        self.age_std = std if std > 1e-6 else 1.0
        return self

    def _check_fitted(self):
        if self.age_mean is None or self.age_std is None:
            raise RuntimeError("MetadataEncoder is not fitted: call fit(train_df) or from_dict(...) first")

    def _encode(self, ages, sexes, sites):
        self._check_fitted()
        n = len(ages)
        features = np.zeros((n, self.n_features), np.float32)
        avail = np.zeros((n, len(GROUPS)), np.float32)
        for i, (age, sex, site) in enumerate(zip(ages, sexes, sites)):
            age = normalize_age(age)
            if not math.isnan(age):
                features[i, 0] = (age - self.age_mean) / self.age_std
                avail[i, 0] = 1
            sex = normalize_sex(sex)
            if sex:
                features[i, 1 + SEXES.index(sex)] = 1
                avail[i, 1] = 1
            site = normalize_site(site)
            if site:
                features[i, 1 + len(SEXES) + SITES.index(site)] = 1
                avail[i, 2] = 1
        return features, avail

    def transform(self, df):
        """Returns (features float32 (N, F), availability float32 (N, 3)); missing values are zeros with availability 0.

        Args:
            df: records with `age`, `sex`, `site` columns (any accepted spelling).
        """
        return self._encode(list(df["age"]), list(df["sex"]), list(df["site"]))

    def encode_one(self, age=None, sex=None, site=None):
        """Encodes one image's metadata as a batch of one: (features (1, F), availability (1, 3)).

        Args:
            age: years, or None.
            sex: "male" / "female", or None.
            site: a unified, HAM10000 or ISIC 2019 site name, or None; unknown names raise ValueError.
        """
        return self._encode([age], [sex], [site])

    sample_availability = staticmethod(sample_availability)

    def to_dict(self):
        """JSON-ready state (statistics and vocabularies), for the run folder."""
        self._check_fitted()
        return {"age_mean": self.age_mean, "age_std": self.age_std,
                "sexes": list(SEXES), "sites": list(SITES)}

    @classmethod
    def from_dict(cls, data):
        """Rebuilds an encoder saved with `to_dict`; refuses one whose vocabulary differs from this code's.

        Args:
            data: dict from `to_dict`.
        """
        if list(data.get("sexes", SEXES)) != list(SEXES) or list(data.get("sites", SITES)) != list(SITES):
            raise ValueError("Saved metadata encoder uses another sex/site vocabulary than this version "
                             f"(saved sites {data.get('sites')}, current {list(SITES)})")
        return cls(float(data["age_mean"]), float(data["age_std"]))
