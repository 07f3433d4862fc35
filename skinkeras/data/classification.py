"""Shared code of the classification datasets: records, image look-up, lesion-grouped splits, balancing.

A loader (HAM10000, ISIC 2019) returns a records DataFrame with `RECORD_COLUMNS`; `split_records`
adds a `subset` column; `balance_plan` turns the training labels into the index list of one
(controlled) balanced epoch, paper section 4.2.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from skinkeras import runs
from skinkeras.data.isic2018 import list_images

RECORD_COLUMNS = ("image_id", "image_path", "lesion_id", "label", "dx", "age", "sex", "site")
SUBSETS = ("train", "val", "test")


def as_folder_list(images):
    """Returns `images` (None, one folder, or several) as a list of folder strings.

    Args:
        images: None, a path, or a list/tuple of paths.
    """
    if images is None:
        return []
    if isinstance(images, (str, os.PathLike)):
        return [os.fspath(images)]
    return [os.fspath(p) for p in images]


def index_images(folders):
    """Maps image stem -> path over `folders` (the first folder wins for a stem found twice).

    Args:
        folders: existing image folders (not recursive).
    """
    index = {}
    for folder in folders:
        for path in list_images(folder):
            index.setdefault(os.path.splitext(os.path.basename(path))[0], path)
    return index


def attach_images(df, folders):
    """Adds `image_path` from `folders`; rows without an image are left out and reported.

    Args:
        df: records with `image_id`.
        folders: image folders to search.

    Returns:
        (df, problems): the rows with an image, and [(image_id, reason)] for the others.
    """
    index = index_images(folders)
    paths = df["image_id"].map(index)
    found = paths.notna()
    where = ", ".join(folders)
    problems = [(i, f"no image file for {i} in {where}") for i in df.loc[~found, "image_id"]]
    out = df.loc[found].copy()
    out["image_path"] = paths[found].astype(str)
    return out.reset_index(drop=True), problems


def finish_records(df):
    """Orders and types the record columns: lesion_id falls back to image_id, age float, sex/site str.

    Args:
        df: records holding at least `RECORD_COLUMNS` (`image_path` may be absent for label-only tables).
    """
    out = df.copy()
    lesion = out["lesion_id"].fillna("").astype(str).str.strip()
    # An image without lesion id is its own group, so grouped splits still keep it on one side.
    out["lesion_id"] = lesion.where(lesion != "", out["image_id"].astype(str))
    out["label"] = out["label"].astype(np.int64)
    out["age"] = pd.to_numeric(out["age"], errors="coerce").astype(np.float64)
    out["sex"] = out["sex"].fillna("").astype(str)
    out["site"] = out["site"].fillna("").astype(str)
    cols = [c for c in RECORD_COLUMNS if c in out.columns]
    return out[cols + [c for c in out.columns if c not in cols]].reset_index(drop=True)


def drop_duplicate_ids(df, source):
    """Keeps the first row of an image id listed twice and reports the others.

    Args:
        df: records with `image_id`.
        source: file name for the message.
    """
    dup = df["image_id"].duplicated()
    problems = [(i, f"image id listed twice in {source}; first row kept") for i in df.loc[dup, "image_id"]]
    return df.loc[~dup].reset_index(drop=True), problems


# ----------------------------------------------------------------------------- splits


def _subset_names(fractions):
    fractions = [float(f) for f in fractions]
    if len(fractions) not in (2, 3) or any(f <= 0 for f in fractions):
        raise ValueError(f"fractions must be 2 or 3 positive numbers (train, val[, test]), got {fractions}")
    if abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions} (sum {sum(fractions)})")
    return SUBSETS[: len(fractions)], np.array(fractions)


def _assign_groups(group_sizes, group_labels, group_counts, fractions, rng):
    """Greedy stratified assignment of groups to subsets; see `split_records`."""
    n_sub = len(fractions)
    n_classes = group_counts.shape[1]
    assigned = np.full(len(group_sizes), -1, np.int64)
    filled = np.zeros((n_sub, n_classes))
    target = fractions[:, None] * group_counts.sum(axis=0)[None, :]
    for c in range(n_classes):
        members = np.flatnonzero(group_labels == c)
        if members.size == 0:
            continue
        # Random order, then largest groups first: big lesions placed early are easiest to balance.
        members = members[rng.permutation(members.size)]
        members = members[np.argsort(-group_sizes[members], kind="stable")]
        present = np.zeros(n_sub, bool)
        for k, g in enumerate(members):
            left = members.size - k
            empty = np.flatnonzero(~present)
            deficit = target[:, c] - filled[:, c]
            if 0 < left <= empty.size:
                # As many groups left as subsets still without this class: each must go to one of them.
                choices = empty
            else:
                choices = np.arange(n_sub)
            # Largest deficit wins; ties go to the larger fraction (train before val before test).
            best = choices[np.lexsort((-fractions[choices], -deficit[choices]))[0]]
            assigned[g] = best
            present[best] = True
            filled[best] += group_counts[g]
    return assigned


def split_records(df, fractions=(0.7, 0.15, 0.15), by="lesion", seed=0):
    """Returns a copy of `df` with a `subset` column (train / val / test), stratified by label.

    by="lesion" (default) keeps all images of one `lesion_id` in one subset, so a lesion
    photographed twice never sits on both sides. by="image" splits images independently (the
    paper's per-image split). Both use the same greedy stratified assignment: per class, groups
    (lesions or images) in random order, largest first, each to the subset furthest below its
    target image count; a class with at least as many groups as subsets gets at least one group
    in every subset. Deterministic for a seed and independent of the row order of `df`.

    Args:
        df: records with `image_id`, `lesion_id`, `label`.
        fractions: (train, val, test) or (train, val) fractions, summing to 1.
        by: "lesion" or "image".
        seed: random seed.
    """
    names, fractions = _subset_names(fractions)
    if by not in ("lesion", "image"):
        raise ValueError(f"Unknown split by={by!r}; valid: lesion, image")
    if df.empty:
        raise ValueError("No records to split")
    labels = df["label"].to_numpy(np.int64)
    key = df["lesion_id"].astype(str) if by == "lesion" else df["image_id"].astype(str)
    # Groups numbered in sorted key order: the result must not depend on how the rows were ordered.
    uniq, group_of_row = np.unique(key.to_numpy(), return_inverse=True)
    n_classes = int(labels.max()) + 1
    counts = np.zeros((uniq.size, n_classes))
    np.add.at(counts, (group_of_row, labels), 1)
    group_sizes = counts.sum(axis=1)
    # A lesion with images of several labels (not in the official files) follows its majority label.
    group_labels = counts.argmax(axis=1)
    rng = np.random.default_rng(seed)
    assigned = _assign_groups(group_sizes, group_labels, counts, fractions, rng)
    out = df.copy()
    out["subset"] = np.array(names)[assigned[group_of_row]]
    return out


def write_split(df, path):
    """Writes the split as CSV: image_id, lesion_id, label, dx, subset (image_path too when present).

    Args:
        df: records with a `subset` column.
        path: output file.
    """
    cols = [c for c in ("image_id", "lesion_id", "label", "dx", "subset", "image_path") if c in df.columns]
    df[cols].to_csv(path, index=False)
    return path


def read_split(path):
    """Reads a split CSV written by `write_split` (ids as strings, label as int).

    Args:
        path: split CSV.

    Raises:
        FileNotFoundError, ValueError: the file is missing or damaged, in one line (`runs.read_csv`).
    """
    df = runs.read_csv(path, columns=("image_id", "subset"))
    if "label" in df.columns:
        try:
            df["label"] = df["label"].astype(np.int64)
        except ValueError as exc:
            raise runs.run_file_error(path, f"label: {exc}") from None
    return df


def apply_split(df, split):
    """Sets `subset` of `df` from a saved split (matched by image_id); records the split lacks are dropped and reported.

    Args:
        df: records.
        split: DataFrame from `read_split`.

    Returns:
        (df, problems).
    """
    subset = df["image_id"].map(dict(zip(split["image_id"], split["subset"])))
    missing = subset.isna()
    problems = [(i, "not in the saved split") for i in df.loc[missing, "image_id"]]
    out = df.loc[~missing].copy()
    out["subset"] = subset[~missing].astype(str)
    return out.reset_index(drop=True), problems


# ----------------------------------------------------------------------------- balancing


def default_cap_floor(labels):
    """Default (cap, floor) for `balance_plan`: twice and half the mean class size.

    With HAM10000's training split (about 7000 images, 7 classes, mean 1000) this gives
    cap 2000 and floor 500; it scales with the data, so small and synthetic sets get
    proportionate values.

    Args:
        labels: training labels.
    """
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    mean = counts.sum() / max(len(counts), 1)
    return max(1, int(round(2 * mean))), max(1, int(round(0.5 * mean)))


def _cap_floor(labels, cap, floor):
    d_cap, d_floor = default_cap_floor(labels)
    return (d_cap if cap is None else int(cap)), (d_floor if floor is None else int(floor))


def balance_target(count, cap, floor, max_factor=5):
    """Images of a class after balancing: min(count, cap) above the floor, min(floor, max_factor*count) below.

    Args:
        count: images of the class.
        cap: largest class size kept.
        floor: size minority classes are expanded towards.
        max_factor: most copies (original included) of one image; None for no limit.
    """
    if count >= floor:
        return min(count, cap)
    target = floor if max_factor is None else min(floor, int(max_factor) * count)
    return max(count, target)


def balance_plan(labels, cap=None, floor=None, seed=0, max_factor=5):
    """Index list of one balanced training epoch (paper 4.2: controlled, not strict equalisation).

    Per class with n images:
      - n > cap: a random subset of `cap` images, without replacement (majority keeps its
        place, loses its dominance). Draw a new plan per epoch (seed = base + epoch) so that
        over the epochs every majority image is seen.
      - n < floor: every image once, plus copies up to min(floor, max_factor * n) images.
        Copies are spread evenly (every image repeated k or k+1 times) and flagged in
        `is_copy`, because the pipeline must augment them (flip / rotation) so they are not
        plain duplicates. `max_factor` (default 5) bounds the repetition, since heavy
        duplication of a tiny class overfits (the paper's argument against strict equalisation).
      - otherwise the class is untouched.
    Defaults when cap / floor is None: twice / half the mean class size (`default_cap_floor`);
    for HAM10000's 70% training split that is cap 2000, floor 500 (nv 4690 -> 2000; df 80 -> 400,
    limited by max_factor; vasc 100 -> 500; mel, bkl untouched).

    Args:
        labels: training labels (ints or strings), one per image.
        cap: largest class size kept (int), or None for the default.
        floor: size smaller classes are expanded to (int), or None for the default.
        seed: random seed of the subsets and copies.
        max_factor: most copies of one image (original included); None removes the bound.

    Returns:
        (indices, is_copy): int64 positions into `labels` (originals first, in ascending
        order, then the copies), and a bool array, True for a repeated sample.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError("balance_plan needs a non-empty 1-D array of labels")
    cap, floor = _cap_floor(labels, cap, floor)
    if cap < 1 or floor < 0 or floor > cap:
        raise ValueError(f"Need 1 <= cap and 0 <= floor <= cap, got cap={cap}, floor={floor}")
    if max_factor is not None and max_factor < 1:
        raise ValueError(f"max_factor must be >= 1 or None, got {max_factor}")
    rng = np.random.default_rng(seed)
    originals, copies = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        target = balance_target(members.size, cap, floor, max_factor)
        if target <= members.size:
            originals.append(np.sort(rng.choice(members, size=target, replace=False)))
            continue
        originals.append(members)
        extra = target - members.size
        full, rest = divmod(extra, members.size)
        copies.append(np.concatenate([np.tile(members, full), np.sort(rng.choice(members, rest, replace=False))]))
    orig = np.sort(np.concatenate(originals))
    dup = np.sort(np.concatenate(copies)) if copies else np.zeros(0, np.int64)
    indices = np.concatenate([orig, dup]).astype(np.int64)
    is_copy = np.concatenate([np.zeros(orig.size, bool), np.ones(dup.size, bool)])
    return indices, is_copy


def epoch_prior(labels, n_classes, balance=True, cap=None, floor=None, max_factor=5):
    """Class shares of one training epoch: the prior p(y) a classifier trained on those epochs has learned.

    With `balance` these are the shares of `balance_plan`'s epoch (the same for every epoch seed: only which
    images are drawn changes); without it, the training split's own shares. For HAM10000's 70% lesion split
    the balanced epoch is still 37% nv (2000 of about 5,400), so an argmax decision keeps favouring nv.

    Args:
        labels: int labels of the training split.
        n_classes: number of classes.
        balance: whether training used balanced epochs (`ClsTrainConfig.balance`).
        cap, floor, max_factor: as in `balance_plan`.
    """
    labels = np.asarray(labels, np.int64)
    counts = class_counts(labels, n_classes).astype(np.float64)
    if balance:
        cap, floor = _cap_floor(labels, cap, floor)
        counts = np.array([balance_target(int(n), cap, floor, max_factor) if n else 0 for n in counts], np.float64)
    if counts.sum() <= 0:
        raise ValueError("epoch_prior needs at least one training label")
    return counts / counts.sum()


def class_counts(labels, n_classes):
    """Images per class index 0..n_classes-1.

    Args:
        labels: int labels.
        n_classes: number of classes.
    """
    return np.bincount(np.asarray(labels, np.int64), minlength=n_classes)[:n_classes]


def plot_class_distribution(before_counts, after_counts, class_names, path, title="Class distribution",
                            after_copies=None):
    """Writes the before / after balancing bar chart (paper Figures 3-4) as PNG.

    Args:
        before_counts: images per class before balancing (sequence aligned with class_names, or dict name -> count).
        after_counts: images per class after balancing (same forms).
        class_names: class names, in order.
        path: output PNG.
        title: figure title.
        after_copies: optional repeated samples per class, drawn hatched inside the after bars.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def as_list(counts):
        if counts is None:
            return None
        if isinstance(counts, dict):
            return [int(counts.get(c, 0)) for c in class_names]
        counts = [int(c) for c in counts]
        if len(counts) != len(class_names):
            raise ValueError(f"{len(counts)} counts for {len(class_names)} classes")
        return counts

    before, after, copies = as_list(before_counts), as_list(after_counts), as_list(after_copies)
    # Figure + Agg canvas directly: no pyplot global state, safe under any GUI backend setting.
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    x = np.arange(len(class_names))
    for ax, counts, name in ((axes[0], before, "before balancing"), (axes[1], after, "after balancing")):
        bars = ax.bar(x, counts, color="#4c72b0")
        ax.bar_label(bars, fontsize=8)
        ax.set_xticks(x, class_names, rotation=30)
        ax.set_title(f"{name} ({sum(counts)} images)")
        ax.set_xlabel("class")
    if copies is not None:
        axes[1].bar(x, copies, color="#dd8452", hatch="//", label="augmented copies")
        axes[1].legend()
    axes[0].set_ylabel("images")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
