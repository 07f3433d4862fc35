"""`reproduce`: the paper's Tables 1-3 by one command, our number beside the paper's, with intervals.

Every row is an ordinary run folder made by the stage functions (`train_segmentation`, `segment`,
`train_classification`, `cls-eval`, `seg-eval`), so each can be opened, resumed and reported on its own.
A row whose run and evaluation are finished is kept; one cut off midway is resumed; one that fails is
recorded as failed and the others go on. The paper's values come from `experiments/paper_tables.toml`.

Layout of OUT:
    reproduce.json              the resolved settings
    cache/<set>-<size>[-segmented]/   input caches (`prepare`'s layout), each set decoded once for every row
    runs/seg-<arch>/            Table 1 training runs        evals/seg-<arch>/   their seg-eval
    segdir/                     the classification set segmented by the Table 1 Deep-UNet (Figure 2)
    runs/cls-<arch>/            Table 2 / 3 training runs    evals/cls-<arch>/   their cls-eval on the test split
    evals/cls-anchor-<ref>/     the classical anchor fitted on the reference row's split (a row of its table)
    evals/<external>/...        the same models on an external set; segdir-<external>/ its segmented images
    results.md, results.csv     every table, ours beside the paper's
"""

import dataclasses
import math
import os
import tomllib
import traceback

import pandas as pd

from skinkeras import runs
from skinkeras.metrics import DECISION_METRICS, PRIOR_CORRECTED
from skinkeras.segmentation.segment import segment_items
from skinkeras.config import ClsTrainConfig, ReproduceConfig, SegTrainConfig

PAPER_TABLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments",
                            "paper_tables.toml")
TABLES = ("table1", "table2", "table3")
RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
SEGMENTER = "deep_unet"  # the Table 1 model whose masks make the segmented images (paper 4.1.3)
CACHE_DIR = "cache"
SEG_TRAIN_SET = "isic2018"  # the layout `find_pairs` reads Table 1's training pairs in (or plain folders)
ANCHOR = "anchor"  # the classical anchor's row, fitted on the reference row's own split (`cls-anchor`)
ANCHOR_LABEL = "Anchor: colour histograms + metadata, logistic regression"


def paper_tables(path=PAPER_TABLES):
    """The paper's tables as data: {table: {"title", "task", "metrics", "reference", "rows": {arch: values}}}.

    Args:
        path: the TOML data file.
    """
    with open(path, "rb") as f:
        return tomllib.load(f)


def _seg_run(cfg, arch):
    return os.path.join(cfg.out, "runs", f"seg-{arch}")


def _cls_run(cfg, arch):
    return os.path.join(cfg.out, "runs", f"cls-{arch}")


def _eval_dir(cfg, task, arch, external=None):
    return os.path.join(cfg.out, "evals", *([external] if external else []), f"{task}-{arch}")


def _overrides(cfg):
    # The CLI's --epochs / --image-size / --limit / --encoder / --weights apply to every row of both tasks.
    return {k: getattr(cfg, k) for k in ("epochs", "image_size", "limit", "encoder", "weights", "seed", "devices")
            if getattr(cfg, k) is not None}


def seg_config(cfg, arch):
    """The SegTrainConfig of a Table 1 row.

    Args:
        cfg: `ReproduceConfig`.
        arch: the row's architecture.
    """
    values = {**dict(data_dir=cfg.seg_data_dir, images=cfg.seg_images, masks=cfg.seg_masks),
              **cfg.segmentation, **_overrides(cfg), "arch": arch, "out": _seg_run(cfg, arch)}
    return SegTrainConfig.from_dict({k: v for k, v in values.items() if v is not None})


def cls_config(cfg, arch, seg_dir=None):
    """The ClsTrainConfig of a Table 2 / 3 row.

    Args:
        cfg: `ReproduceConfig`.
        arch: the row's architecture.
        seg_dir: SEGDIR of the segmented images (rows that read them).
    """
    values = {"dataset": cfg.dataset, "data_dir": cfg.data_dir, "images": cfg.images, "seg_dir": seg_dir,
              **cfg.classification, **_overrides(cfg), "arch": arch, "out": _cls_run(cfg, arch)}
    return ClsTrainConfig.from_dict({k: v for k, v in values.items() if v is not None})


def seg_cache(cfg, size, progress=True):
    """The input cache of Table 1's training pairs, OUT/cache/isic2018-<size>: made once, then reused.

    Args:
        cfg: `ReproduceConfig`.
        size: the row's input size in px.
        progress: show a progress bar while preparing.

    Returns:
        Its folder, or None when `cfg.cache` is off.
    """
    if not cfg.cache:
        return None
    from skinkeras.data.cache import ensure_cache

    path = os.path.join(cfg.out, CACHE_DIR, f"{SEG_TRAIN_SET}-{size}")
    ensure_cache(path, SEG_TRAIN_SET, size, data_dir=cfg.seg_data_dir, images=cfg.seg_images, masks=cfg.seg_masks,
                 progress=progress)
    return path


def cls_cache(cfg, size, seg_dir=None, progress=True):
    """The input cache of the classification set, OUT/cache/<dataset>-<size>[-segmented]: made once, reused.

    Rows without the segmented branch get a cache of the originals alone, so they need no SEGDIR; the others
    one with the segmented images of `seg_dir` beside them (prepared again if the SEGDIR's files change).

    Args:
        cfg: `ReproduceConfig`.
        size: the row's input size in px.
        seg_dir: SEGDIR whose segmented images the rows read, or None.
        progress: show a progress bar while preparing.

    Returns:
        Its folder, or None when `cfg.cache` is off.
    """
    if not cfg.cache:
        return None
    from skinkeras.data.cache import ensure_cache

    path = os.path.join(cfg.out, CACHE_DIR, f"{cfg.dataset}-{size}" + ("-segmented" if seg_dir else ""))
    ensure_cache(path, cfg.dataset, size, data_dir=cfg.data_dir, images=cfg.images, seg_dir=seg_dir,
                 progress=progress)
    return path


def check_rows(cfg):
    """Builds (without running) the config of every requested row, so a bad value fails at once, in one line.

    Args:
        cfg: `ReproduceConfig`.
    """
    from skinkeras.models.registry import get_architecture

    paper = paper_tables()
    needs_segmenter = "table1" in cfg.tables
    for table in cfg.tables:
        spec = paper[table]
        for arch in spec["rows"]:
            if cfg.rows and arch not in cfg.rows:
                continue
            if spec["task"] == "classification":
                if not (cfg.data_dir or cfg.images):
                    raise ValueError(f"{table} needs --data-dir DIR, the {cfg.dataset} folder")
                needs_segmenter |= get_architecture(arch, "classification").needs_segmented and not cfg.seg_dir
            try:
                if spec["task"] == "segmentation":
                    seg_config(cfg, arch)
                else:
                    cls_config(cfg, arch, cfg.seg_dir or os.path.join(cfg.out, "segdir"))
            except ValueError as exc:
                raise ValueError(f"{table} row {arch}: {exc}") from None
    if needs_segmenter and not (cfg.seg_data_dir or cfg.seg_images):
        raise ValueError("Give --seg-data-dir DIR (ISIC 2018 Task 1 layout) or --seg-images DIR --seg-masks DIR: "
                         "Table 1 trains on it, and its Deep-UNet segments the classification images (or pass "
                         "--seg-dir SEGDIR)")
    if "table1" in cfg.tables and cfg.seg_images and not (cfg.seg_eval_data_dir or cfg.seg_eval_images):
        raise ValueError("Table 1 needs an evaluation set: --seg-eval-data-dir DIR or --seg-eval-images DIR "
                         "--seg-eval-masks DIR")
    if cfg.rows:
        known = {arch for t in cfg.tables for arch in paper[t]["rows"]}
        unknown = [r for r in cfg.rows if r not in known]
        if unknown:
            raise ValueError(f"--rows {', '.join(unknown)} not in {', '.join(cfg.tables)}; valid: "
                             f"{', '.join(sorted(known))}")


def _same(saved, asked):
    if isinstance(saved, str) and isinstance(asked, str) and os.path.exists(saved) and os.path.exists(asked):
        return os.path.realpath(saved) == os.path.realpath(asked)  # the same folder, spelled another way
    return saved == asked


def _finished(run_dir, epochs):
    path = os.path.join(run_dir, "metrics.json")
    return os.path.isfile(path) and (runs.read_json(path).get("epochs_run") or 0) >= epochs


def train_row(train, run_cfg, progress=True):
    """Trains one row's model unless its run is finished; resumes a run that was cut off.

    Args:
        train: `train_segmentation` or `train_classification`.
        run_cfg: the row's training config (its `out` is the run folder).
        progress: show progress bars.

    Returns:
        "kept", "resumed" or "trained".
    """
    saved_path = os.path.join(run_cfg.out, "config.json")
    if os.path.isfile(saved_path):
        # A row is its folder: a folder made with other settings is not this row (resuming would keep its settings).
        saved, asked = runs.read_json(saved_path), dataclasses.asdict(run_cfg)
        # The cache holds the same pixels the files decode to (`prepare`), so reading it is the same row.
        changed = sorted(k for k in asked if k not in ("epochs", "devices", "out", "cache")
                         and not _same(saved.get(k, asked[k]), asked[k]))
        if changed:
            was = ", ".join(f"{k}={saved[k]!r}" for k in changed)
            now = ", ".join(f"{k}={asked[k]!r}" for k in changed)
            raise ValueError(f"{run_cfg.out} was made with other settings ({was}; asked {now}): give another --out")
    if _finished(run_cfg.out, run_cfg.epochs):
        return "kept"
    resume = os.path.isfile(os.path.join(run_cfg.out, "last.keras"))
    train(run_cfg, resume=resume, resume_epochs=run_cfg.epochs if resume else None, progress=progress)
    return "resumed" if resume else "trained"


def _fresh(eval_dir, model_path):
    metrics = os.path.join(eval_dir, "metrics.json")
    return os.path.isfile(metrics) and os.path.getmtime(metrics) >= os.path.getmtime(model_path)


def _done(run_cfg, eval_dir=None):
    """Whether a row needs its inputs no more: its run is finished and (if given) its evaluation is fresh."""
    model = os.path.join(run_cfg.out, "best.keras")
    return _finished(run_cfg.out, run_cfg.epochs) and (eval_dir is None or (os.path.isfile(model)
                                                                           and _fresh(eval_dir, model)))


def segmented_images(cfg, progress=True):
    """The SEGDIR of the classification set: the user's, or made here with the Table 1 Deep-UNet.

    Args:
        cfg: `ReproduceConfig`.
        progress: show progress bars.
    """
    if cfg.seg_dir:
        return cfg.seg_dir
    from skinkeras.classification.records import load_cls_records
    from skinkeras.segmentation.train import train_segmentation

    seg_cfg = seg_config(cfg, SEGMENTER)
    # A finished row reads nothing, so its cache is not prepared (or checked against the files) at all.
    if not _done(seg_cfg):
        seg_cfg = dataclasses.replace(seg_cfg, cache=seg_cache(cfg, seg_cfg.image_size, progress))
    train_row(train_segmentation, seg_cfg, progress)
    records, _ = load_cls_records(cls_config(cfg, "original_only"), needs_segmented=False)
    out = os.path.join(cfg.out, "segdir")
    # Every image of the set, not only a --limit sample: the folder is shared by all rows and all resumes.
    segment_items(os.path.join(seg_cfg.out, "best.keras"), list(zip(records.image_id, records.image_path)),
                  f"{cfg.dataset} in {cfg.data_dir or cfg.images}", out, cfg.batch_size, progress)
    return out


def _external_segdir(cfg, name, progress):
    from skinkeras.data.sets import segmentation_pairs

    pairs, _ = segmentation_pairs(name, cfg.external[name], subset=cfg.external_subset)
    out = os.path.join(cfg.out, f"segdir-{name}")
    segment_items(os.path.join(_seg_run(cfg, SEGMENTER), "best.keras"), [(p.image_id, p.image_path) for p in pairs],
                  f"{name} in {cfg.external[name]}", out, cfg.batch_size, progress)
    return out


def _row_record(table, arch, label, task, run_dir):
    record = {"table": table, "row": arch, "label": label, "task": task, "status": "ok", "error": None,
              "run": os.path.abspath(run_dir)}
    metrics_path = os.path.join(run_dir, "metrics.json")
    if os.path.isfile(metrics_path):
        m = runs.read_json(metrics_path)
        record.update(params=m.get("params"), size_mb=m.get("size_mb"), train_minutes=m.get("train_minutes"),
                      epochs=m.get("epochs_run"))
    config_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(config_path):
        from skinkeras.models.registry import get_architecture

        c = runs.read_json(config_path)
        spec = get_architecture(arch, task)
        encoder = c.get("encoder") if "encoder" in spec.fields else spec.fixed.get("encoder", arch)
        record["setup"] = f"{encoder}, {c.get('image_size')} px, {c.get('epochs')} ep, weights {c.get('weights')}"
    env_path = os.path.join(run_dir, "env.json")
    if os.path.isfile(env_path):
        env = runs.read_json(env_path)
        placement = env.get("placement") or {}
        record["device"] = (f"{env.get('backend')} {placement.get('platform', '?')} x{placement.get('devices', 1)}")
    return record


def _scores(record, metrics, names, prefix=""):
    intervals = metrics.get("intervals") or {}
    for name in names:
        record[f"{prefix}{name}"] = metrics.get(name)
        low_high = intervals.get(name) or [None, None]
        record[f"{prefix}{name}_low"], record[f"{prefix}{name}_high"] = low_high


def _classification_scores(record, metrics):
    _scores(record, metrics, ("accuracy", "balanced_accuracy", "auc_macro", "melanoma_auc", "top2_accuracy"))
    _scores(record, metrics.get(PRIOR_CORRECTED, {}), DECISION_METRICS, f"{PRIOR_CORRECTED}_")


def _failed(cfg, record, exc):
    """`record` marked failed with the error's first line; the traceback goes to OUT/errors.log."""
    with open(os.path.join(cfg.out, "errors.log"), "a") as f:
        f.write(f"== {record['table']} {record['row']}\n{traceback.format_exc()}\n")
    return {**record, "status": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}


def run_segmentation_row(cfg, arch, label, progress=True):
    """Trains (or keeps) and scores one Table 1 row, on the evaluation set and every external set."""
    from skinkeras.segmentation.evaluate import seg_eval_model
    from skinkeras.segmentation.train import train_segmentation

    run_cfg = seg_config(cfg, arch)
    if not _done(run_cfg):
        run_cfg = dataclasses.replace(run_cfg, cache=seg_cache(cfg, run_cfg.image_size, progress))
    state = train_row(train_segmentation, run_cfg, progress)
    model = os.path.join(run_cfg.out, "best.keras")
    record = {**_row_record("table1", arch, label, "segmentation", run_cfg.out), "training": state}
    sets = [(None, cfg.seg_eval_dataset, cfg.seg_eval_data_dir or cfg.seg_data_dir, cfg.seg_eval_subset)]
    sets += [(name, name, folder, cfg.external_subset) for name, folder in cfg.external.items()]
    for external, dataset, data_dir, subset in sets:
        out = _eval_dir(cfg, "seg", arch, external)
        if not _fresh(out, model):
            images, masks = (cfg.seg_eval_images, cfg.seg_eval_masks) if external is None else (None, None)
            seg_eval_model(model, out, data_dir if not images else None, images, masks, subset, seed=cfg.seed,
                           batch_size=cfg.batch_size, progress=progress, dataset=dataset, bootstrap=cfg.bootstrap)
        metrics = runs.read_json(os.path.join(out, "metrics.json"))
        prefix = f"{external}_" if external else ""
        _scores(record, metrics, ("dice", "jaccard", "threshold_jaccard"), prefix)
        record[f"{prefix}images"] = metrics.get("images")
        record[f"{prefix}eval"] = os.path.abspath(out)
    return record


def run_classification_row(cfg, table, arch, label, seg_dir, progress=True):
    """Trains (or keeps) and scores one Table 2 / 3 row on its test split and every external set."""
    from skinkeras.classification.evaluate import cls_eval
    from skinkeras.classification.train import train_classification
    from skinkeras.models.registry import get_architecture

    needs_segmented = get_architecture(arch, "classification").needs_segmented
    seg_dir = seg_dir if needs_segmented else None
    out = _eval_dir(cfg, "cls", arch)
    run_cfg = cls_config(cfg, arch, seg_dir)
    cache = None if _done(run_cfg, out) else cls_cache(cfg, run_cfg.image_size, seg_dir, progress)
    run_cfg = dataclasses.replace(run_cfg, cache=cache)
    state = train_row(train_classification, run_cfg, progress)
    model = os.path.join(run_cfg.out, "best.keras")
    record = {**_row_record(table, arch, label, "classification", run_cfg.out), "training": state}
    if not _fresh(out, model):
        cls_eval(model, out, "test", batch_size=cfg.batch_size, progress=progress, bootstrap=cfg.bootstrap,
                 seed=cfg.seed, cache=cache)
    metrics = runs.read_json(os.path.join(out, "metrics.json"))
    _classification_scores(record, metrics)
    record.update(images=metrics.get("images"), eval=os.path.abspath(out))
    for name, folder in cfg.external.items():
        ext_out = _eval_dir(cfg, "cls", arch, name)
        if not _fresh(ext_out, model):
            ext_seg = _external_segdir(cfg, name, progress) if needs_segmented else None
            cls_eval(model, ext_out, cfg.external_subset, data_dir=folder, seg_dir=ext_seg,
                     batch_size=cfg.batch_size, progress=progress, dataset=name, bootstrap=cfg.bootstrap,
                     seed=cfg.seed)
        ext = runs.read_json(os.path.join(ext_out, "metrics.json"))
        _scores(record, ext, ("balanced_accuracy", "melanoma_auc"), f"{name}_")
        record[f"{name}_images"] = ext.get("images")
    return record


def run_anchor_row(cfg, table, reference, progress=True):
    """The classical anchor fitted on the reference row's training split and scored on its test split.

    It is scored on the same lesions as every row of the table (all share the reference row's split: same seed,
    same records), so its paired differences are like any row's. Refitted when the reference run's split changed.

    Args:
        cfg: `ReproduceConfig`.
        table: the table name.
        reference: the reference row's architecture.
        progress: print progress lines.
    """
    from skinkeras.classification.anchor import cls_anchor

    run_dir = _cls_run(cfg, reference)
    out = _eval_dir(cfg, "cls", f"{ANCHOR}-{reference}")
    split = os.path.join(run_dir, runs.SPLIT_CSV)
    state = "kept" if _fresh(out, split) else "fitted"
    if state == "fitted":
        cls_anchor(run_dir, out, "test", bootstrap=cfg.bootstrap, seed=cfg.seed, progress=progress)
    metrics = runs.read_json(os.path.join(out, "metrics.json"))
    record = {"table": table, "row": ANCHOR, "label": ANCHOR_LABEL, "task": "classification", "status": "ok",
              "error": None, "run": os.path.abspath(out), "eval": os.path.abspath(out), "training": state,
              "setup": f"fitted on the {reference} row's {metrics.get('train_images')} training images"}
    _classification_scores(record, metrics)
    record["images"] = metrics.get("images")
    return record


def add_paired(cfg, records, table, reference):
    """Paired bootstrap differences of each classification row against the table's reference row.

    Args:
        cfg: `ReproduceConfig`.
        records: the table's row records (updated in place).
        table: table name.
        reference: architecture name of the reference row.
    """
    from skinkeras.classification.evaluate import paired_against
    from skinkeras.data.sets import dataset_classes

    ref = next((r for r in records if r["row"] == reference and r["status"] == "ok"), None)
    for record in records:
        if record["status"] != "ok" or record["row"] == reference or ref is None:
            continue
        paired = paired_against(record["eval"], ref["eval"], dataset_classes(cfg.dataset), cfg.dataset,
                                cfg.bootstrap or 1000, cfg.seed)
        found = {metric: paired[metric] for metric in DECISION_METRICS}
        found.update({f"{PRIOR_CORRECTED}_{m}": diff for m, diff in paired.get(PRIOR_CORRECTED, {}).items()})
        for metric, diff in found.items():
            record[f"{metric}_vs_ref"] = diff["difference"]
            record[f"{metric}_vs_ref_low"], record[f"{metric}_vs_ref_high"] = diff["interval"] or [None, None]
            record[f"{metric}_vs_ref_p"] = diff["p_value"]
        record["reference"] = reference


def reproduce(cfg: ReproduceConfig, progress=True):
    """Runs every row of the requested tables, then writes results.md and results.csv; returns the records.

    Every row's config is built first (`check_rows`): a bad value raises `ValueError` in one line before
    anything is written.

    Args:
        cfg: `ReproduceConfig`.
        progress: show progress bars.
    """
    from skinkeras import distribute
    from skinkeras.models.registry import get_architecture

    # Every row's config is checked now, before any folder or run, not after hours of the rows before it.
    check_rows(cfg)
    os.makedirs(cfg.out, exist_ok=True)
    runs.write_json(os.path.join(cfg.out, "reproduce.json"), dataclasses.asdict(cfg))
    distribute.configure(cfg.devices)
    paper = paper_tables()
    records, seg_dir = [], None
    for table in cfg.tables:
        spec = paper[table]
        rows = [(arch, values["label"]) for arch, values in spec["rows"].items() if not cfg.rows or arch in cfg.rows]
        table_records = []
        for arch, label in rows:
            try:
                if spec["task"] == "segmentation":
                    record = run_segmentation_row(cfg, arch, label, progress)
                else:
                    if seg_dir is None and get_architecture(arch, "classification").needs_segmented:
                        seg_dir = segmented_images(cfg, progress)
                    record = run_classification_row(cfg, table, arch, label, seg_dir, progress)
            except Exception as exc:  # noqa: BLE001  (one failed row must not lose the others)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                run_dir = (_seg_run if spec["task"] == "segmentation" else _cls_run)(cfg, arch)
                record = _failed(cfg, _row_record(table, arch, label, spec["task"], run_dir), exc)
            _add_paper(record, spec, cfg.dataset)
            table_records.append(record)
            write_results(cfg, paper, records + table_records)
        reference = spec.get("reference")
        if spec["task"] == "classification" and any(r["row"] == reference and r["status"] == "ok"
                                                    for r in table_records):
            try:
                table_records.append(run_anchor_row(cfg, table, reference, progress))
            except Exception as exc:  # noqa: BLE001  (the anchor must not lose the trained rows)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                table_records.append(_failed(cfg, {"table": table, "row": ANCHOR, "label": ANCHOR_LABEL,
                                                   "task": "classification", "error": None, "run": os.path.abspath(
                                                       _eval_dir(cfg, "cls", f"{ANCHOR}-{reference}"))}, exc))
        if spec.get("reference"):
            add_paired(cfg, table_records, table, spec["reference"])
        records += table_records
    write_results(cfg, paper, records)
    return records


def _add_paper(record, spec, dataset):
    values = spec["rows"][record["row"]]
    values = values.get(dataset, {}) if spec["task"] == "classification" else values
    for name in ("dice", "jaccard", "size_mb", "accuracy", "auc_macro", "top2_accuracy"):
        if name in values:
            record[f"paper_{name}"] = values[name]


# ----------------------------------------------------------------------------- results files


def _pct(value):
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _with_ci(record, name):
    text = _pct(record.get(name))
    low, high = record.get(f"{name}_low"), record.get(f"{name}_high")
    if text != "–" and low is not None and high is not None:
        text += f" [{_pct(low)}, {_pct(high)}]"
    return text


def _diff(record, name):
    value = record.get(f"{name}_vs_ref")
    if value is None:
        return "–"
    low, high = record.get(f"{name}_vs_ref_low"), record.get(f"{name}_vs_ref_high")
    return f"{100 * value:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def _plain(value, digits=1):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def write_results(cfg, paper, records):
    """Writes results.csv (one line per row, every number) and results.md (the tables, ours beside the paper's).

    Args:
        cfg: `ReproduceConfig`.
        paper: `paper_tables()`.
        records: row records.
    """
    frame = pd.DataFrame(records)
    frame.to_csv(os.path.join(cfg.out, RESULTS_CSV), index=False, float_format="%.6f")
    lines = ["# Reproduction of the paper's tables", "",
             f"Settings: `{os.path.join(os.path.abspath(cfg.out), 'reproduce.json')}`. Numbers in %. Ours: "
             f"95% percentile-bootstrap intervals ({cfg.bootstrap} resamples; classification by lesion, "
             "segmentation by image). The paper trained from ImageNet weights at 224 px on an image-level split; "
             "read the settings before comparing.", ""]
    externals = list(cfg.external)
    for table in cfg.tables:
        spec = paper[table]
        rows = [r for r in records if r["table"] == table]
        if not rows:
            continue
        lines += [f"## {spec['title']}", ""]
        if spec["task"] == "segmentation":
            data = cfg.seg_eval_data_dir or cfg.seg_eval_images or cfg.seg_data_dir
            lines.append(f"Scored by seg-eval on {cfg.seg_eval_dataset} `{data}` (subset {cfg.seg_eval_subset}, "
                         f"original resolution, ISIC scorer definitions).")
            head = ["Model", "paper mDice", "ours Dice", "paper mIoU", "ours IoU", "ours threshold-IoU",
                    "paper MB", "ours MB", "params", "setup", "train min", "device", "images"]
            head += [f"{e} Dice" for e in externals] + ["run"]
            body = [[r["label"], _pct(r.get("paper_dice")), _with_ci(r, "dice"), _pct(r.get("paper_jaccard")),
                     _with_ci(r, "jaccard"), _with_ci(r, "threshold_jaccard"), _plain(r.get("paper_size_mb"), 2),
                     _plain(r.get("size_mb"), 2), _plain(r.get("params")), r.get("setup") or "–",
                     _plain(r.get("train_minutes")),
                     r.get("device") or "–", _plain(r.get("images"))]
                    + [_with_ci(r, f"{e}_dice") for e in externals] + [_status(r)] for r in rows]
        else:
            reference = spec.get("reference")
            lines.append(f"{cfg.dataset} test split of each run (split by {cfg.classification.get('split', 'lesion')}"
                         f"); differences are paired bootstraps against the {reference} row on the same lesions.")
            lines.append("Balanced decision: the argmax of the probabilities divided by the training epochs' class "
                         "shares (`prior_corrected`; no parameter fitted), the decision balanced accuracy asks for.")
            balanced = f"{PRIOR_CORRECTED}_balanced_accuracy"
            head = ["Model", f"paper acc ({cfg.dataset})", "ours acc", "ours balanced acc",
                    f"balanced acc − {reference}", "balanced decision: balanced acc", f"its − {reference}",
                    "its acc", "AUC macro", "melanoma AUC", "params", "MB", "setup", "train min", "device", "images"]
            head += [f"{e} balanced acc" for e in externals] + [f"{e} melanoma AUC" for e in externals] + ["run"]
            body = [[r["label"], _pct(r.get("paper_accuracy")), _with_ci(r, "accuracy"),
                     _with_ci(r, "balanced_accuracy"),
                     "ref" if r["row"] == reference else _diff(r, "balanced_accuracy"), _with_ci(r, balanced),
                     "ref" if r["row"] == reference else _diff(r, balanced), _with_ci(r, f"{PRIOR_CORRECTED}_accuracy"),
                     _with_ci(r, "auc_macro"),
                     _with_ci(r, "melanoma_auc"), _plain(r.get("params")), _plain(r.get("size_mb"), 2),
                     r.get("setup") or "–", _plain(r.get("train_minutes")), r.get("device") or "–",
                     _plain(r.get("images"))]
                    + [_with_ci(r, f"{e}_balanced_accuracy") for e in externals]
                    + [_with_ci(r, f"{e}_melanoma_auc") for e in externals] + [_status(r)] for r in rows]
        lines += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
        lines.append("")
    with open(os.path.join(cfg.out, RESULTS_MD), "w") as f:
        f.write("\n".join(lines))


def _status(record):
    if record["status"] != "ok":
        return f"FAILED: {record['error']} (`{record['run']}`)"
    return f"`{record['run']}`"
