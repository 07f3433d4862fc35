"""Which reader serves which `--dataset` name: the classification training sets (their classes in label
order), the segmentation sets and the external evaluation sets.

PH2 and ISIC 2017 are external validation sets (the paper's stated future work): a classifier trained on
HAM10000 or ISIC 2019 is scored on the classes they share, through each reader's `HAM10000_MAP` (PH2: common
and atypical nevus -> nv, melanoma -> mel; ISIC 2017: nevus -> nv, melanoma -> mel, seborrheic keratosis ->
bkl).
"""

SEGMENTATION_DATASETS = ("isic2018", "ph2", "isic2017")
EXTERNAL_DATASETS = ("ph2", "isic2017")


def _check(dataset, valid):
    if dataset not in valid:
        raise ValueError(f"Unknown --dataset {dataset!r}; valid here: {', '.join(valid)}")


def _classification_readers():
    from skinkeras.data import ham10000, isic2019

    return {"ham10000": (ham10000.CLASSES, ham10000.load_ham10000),
            "isic2019": (isic2019.CLASSES, isic2019.load_isic2019)}


def _classification_reader(dataset):
    table = _classification_readers()
    if dataset not in table:
        raise ValueError(f"Unknown --dataset {dataset!r}; valid: {', '.join(table)}")
    return table[dataset]


def dataset_classes(dataset):
    """Class names of a classification dataset in label order.

    Args:
        dataset: "ham10000" or "isic2019".
    """
    return _classification_reader(dataset)[0]


def classification_records(dataset, data_dir=None, images=None):
    """Labelled records of a classification training set in its official layout (its reader's own checks).

    Args:
        dataset: "ham10000" or "isic2019".
        data_dir: the dataset folder.
        images: image folder(s) instead of (or beside) the dataset folder's own.

    Returns:
        (records DataFrame, problems [(path, reason)]).
    """
    return _classification_reader(dataset)[1](data_dir, images)


def segmentation_pairs(dataset="isic2018", data_dir=None, images=None, masks=None, subset="train"):
    """Image / lesion-mask pairs of a segmentation set in its official layout (or plain folders for isic2018).

    Args:
        dataset: isic2018 | ph2 | isic2017.
        data_dir: the dataset folder in its official layout.
        images: plain image folder (isic2018 only, instead of data_dir).
        masks: plain mask folder (with images).
        subset: train | val | test for the ISIC layouts (PH2 has one set).

    Returns:
        (pairs, problems [(path, reason)]).
    """
    _check(dataset, SEGMENTATION_DATASETS)
    if dataset == "isic2018":
        from skinkeras.data.isic2018 import find_pairs

        return find_pairs(data_dir, images, masks, subset=subset)
    if not data_dir:
        raise ValueError(f"--dataset {dataset} needs --data-dir DIR in its official layout")
    if dataset == "ph2":
        from skinkeras.data.ph2 import ph2_pairs

        return ph2_pairs(data_dir)
    from skinkeras.data.isic2017 import isic2017_pairs

    return isic2017_pairs(data_dir, subset)


def external_records(dataset, data_dir, subset="test"):
    """Labelled records of an external classification set, with `dx` in HAM10000's class names.

    Args:
        dataset: ph2 | isic2017.
        data_dir: the dataset folder in its official layout.
        subset: train | val | test for ISIC 2017 (PH2 has one set).

    Returns:
        (records, problems, {external class: HAM10000 class} mapping used).
    """
    _check(dataset, EXTERNAL_DATASETS)
    if not data_dir:
        raise ValueError(f"--dataset {dataset} needs --data-dir DIR in its official layout")
    if dataset == "ph2":
        from skinkeras.data import ph2

        df, problems = ph2.load_ph2(data_dir)
        return df, problems, dict(ph2.HAM10000_MAP)
    from skinkeras.data import isic2017

    df, problems = isic2017.load_isic2017(data_dir, subset)
    return df, problems, dict(isic2017.HAM10000_MAP)


def model_labels(dx, model_classes):
    """Indices of HAM10000 class names in a model's classes, matched case-insensitively (ISIC 2019 writes MEL).

    Args:
        dx: HAM10000 class names of the records.
        model_classes: the classifier's class names in label order.

    Returns:
        int array, -1 where the model has no such class.
    """
    import numpy as np

    lookup = {c.lower(): i for i, c in enumerate(model_classes)}
    return np.array([lookup.get(str(d).lower(), -1) for d in dx], np.int64)
