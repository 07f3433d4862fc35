"""The run report: one self-contained HTML file for one or several run folders (images inline, no network).

A column is one model: a training run (`seg-train`, `cls-train`) together with the
evaluations of its best.keras (`seg-eval`, `cls-eval`) found among the given folders.
`gradcam` folders add the Figure-7 grid and the CAM measures, `bench` folders the
speed table. The report reads files only; it loads no model and needs no backend.
"""

from __future__ import annotations

import base64
import csv
import functools
import html
import io
import json
import os
from dataclasses import dataclass, field

import numpy as np

from skinkeras import runs
from skinkeras.metrics import DECISION_METRICS, PRIOR_CORRECTED
from skinkeras.report import figures
from skinkeras.runs import REPORT_HTML, VAL_GROUND_TRUTH, VAL_PREDICTIONS, WORST_CSV, WORST_DIR

# The sections every report has, in page order; the others appear when their data exists.
MAIN_SECTIONS = ("overview", "config", "environment", "metrics")
SECTION_TITLES = {
    "overview": "Overview", "config": "Configuration", "environment": "Environment", "data": "Data",
    "curves": "Training curves", "metrics": "Metrics", "confusion": "Confusion matrices", "roc": "ROC curves",
    "per-class": "Per-class scores", "trust": "Trust", "worst": "Worst-scoring images", "gradcam": "Grad-CAM",
    "bench": "Speed (bench)",
}
THUMB = 176
WORST_K = 8

KINDS = ("seg-train", "cls-train", "seg-eval", "cls-eval", "gradcam", "bench")


def folder_kind(path):
    """What a folder holds: one of KINDS, from the files it has; a ValueError names the folder otherwise.

    Args:
        path: a folder written by a skinkeras command.
    """
    has = lambda name: os.path.exists(os.path.join(path, name))  # noqa: E731
    if not os.path.isdir(path):
        raise FileNotFoundError(f"report: {path} is not a folder; give run folders written by skinkeras commands")
    if has("cam_metrics.json"):
        return "gradcam"
    if has("bench.csv"):
        return "bench"
    if has("config.json") and has("history.csv"):
        return "cls-train" if has("classes.json") else "seg-train"
    if has("predictions.csv") and has("ground_truth.csv"):
        return "cls-eval"
    if has("per_image.csv") and has("metrics.json"):
        return "seg-eval"
    raise ValueError(f"report: {path} holds no run (no config.json + history.csv, metrics.json, cam_metrics.json or "
                     "bench.csv); give folders written by seg-train, cls-train, seg-eval, cls-eval, gradcam or bench")


def _read_json(path):
    return runs.read_json(path) if os.path.isfile(path) else {}


def _read_csv(path):
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@dataclass
class Folder:
    """One folder given to the report.

    Args:
        path: absolute path.
        kind: one of KINDS.
        metrics: its metrics.json (cam_metrics.json for gradcam), {} when absent.
    """

    path: str
    kind: str
    metrics: dict = field(default_factory=dict)

    @classmethod
    def read(cls, path):
        path = os.path.abspath(path)
        kind = folder_kind(path)
        name = "cam_metrics.json" if kind == "gradcam" else "metrics.json"
        return cls(path, kind, _read_json(os.path.join(path, name)))

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def model_run(self):
        """The training run folder whose model this evaluation scored (None when unknown)."""
        model = self.metrics.get("model") or (self.metrics.get("models", {}).get("model", {}).get("path"))
        return os.path.dirname(os.path.abspath(model)) if model else None


@dataclass
class Column:
    """One model of the report: a training run and its evaluations (or an evaluation alone)."""

    name: str
    task: str
    train: Folder | None = None
    evals: list = field(default_factory=list)
    cams: list = field(default_factory=list)

    # Each file is read once per report, however many sections use it.
    @functools.cached_property
    def config(self):
        return _read_json(self.train.file("config.json")) if self.train else {}

    @functools.cached_property
    def split(self):
        """Rows of the training run's split.csv ([] without a training run)."""
        return _read_csv(self.train.file(runs.SPLIT_CSV)) if self.train else []

    @functools.cached_property
    def predictions(self):
        """(title, ids, labels, probs, classes) of the held-out evaluation, else of the validation split, or None."""
        return _predictions(self)

    @functools.cached_property
    def env(self):
        folder = self.train or (self.evals[0] if self.evals else None)
        return _read_json(folder.file("env.json")) if folder else {}

    @property
    def test(self):
        """The first evaluation's metrics (the held-out scores), {} when there is none."""
        return self.evals[0].metrics if self.evals else {}


def group_columns(paths):
    """Reads the folders and groups them into columns (one per model), gradcam and bench folders.

    Args:
        paths: folders written by skinkeras commands.

    Returns:
        (columns, gradcam folders, bench folders).
    """
    folders = [Folder.read(p) for p in paths]
    columns, by_run = [], {}
    for folder in folders:
        if folder.kind.endswith("-train"):
            column = Column(os.path.basename(folder.path), folder.kind.split("-")[0], train=folder)
            columns.append(column)
            by_run[os.path.realpath(folder.path)] = column
    cams = [f for f in folders if f.kind == "gradcam"]
    for folder in folders:
        if folder.kind.endswith("-eval"):
            owner = folder.model_run and by_run.get(os.path.realpath(folder.model_run))
            if owner:
                owner.evals.append(folder)
            else:
                columns.append(Column(os.path.basename(folder.path), folder.kind.split("-")[0], evals=[folder]))
    for folder in cams:
        owner = folder.model_run and by_run.get(os.path.realpath(folder.model_run))
        if owner:
            owner.cams.append(folder)
    return columns, cams, [f for f in folders if f.kind == "bench"]


# ----------------------------------------------------------------------------- HTML pieces


def _e(value):
    return html.escape(str(value))


def _png_uri(data):
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img_file(path, alt, width=None):
    if not os.path.isfile(path):
        return ""
    with open(path, "rb") as f:
        data = f.read()
    kind = "jpeg" if path.lower().endswith((".jpg", ".jpeg")) else "png"
    style = f' style="max-width:{width}px"' if width else ""
    return (f'<img alt="{_e(alt)}"{style} src="data:image/{kind};base64,'
            f'{base64.b64encode(data).decode("ascii")}">')


def _img_array(array, alt):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format="PNG")
    return f'<img alt="{_e(alt)}" src="{_png_uri(buffer.getvalue())}">'


def _figure(draw, alt):
    """Runs a figures.plot_* function into memory and returns its <img> (or '' when it drew nothing)."""
    buffer = io.BytesIO()
    if draw(buffer) is None:
        return ""
    return f'<img alt="{_e(alt)}" src="{_png_uri(buffer.getvalue())}">'


def _thumbnail(path, alt):
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB, THUMB))
            return _img_array(np.asarray(img), alt)
    except (OSError, ValueError):
        return f'<span class="muted">{_e(os.path.basename(path))} unreadable</span>'


def _number(value, digits=3):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "&ndash;"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _with_interval(metrics, name):
    """`0.812 [0.774, 0.851]` when metrics.json holds an interval for `name` (key "intervals"), else the number."""
    value = metrics.get(name)
    interval = (metrics.get("intervals") or {}).get(name)
    text = _number(value)
    if isinstance(interval, dict):
        interval = [interval.get("low"), interval.get("high")]
    if interval and len(interval) == 2:
        text += f' <span class="ci">[{_number(interval[0])}, {_number(interval[1])}]</span>'
    return text


def _table(header, rows, sortable=True, cls=""):
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _columns(cells):
    """Side-by-side cells, one per model."""
    return '<div class="side">' + "".join(f'<div class="cell">{c}</div>' for c in cells) + "</div>"


def _cell(column, body):
    return f"<h3>{_e(column.name)}</h3>{body or '<p class=muted>nothing recorded</p>'}"


# ----------------------------------------------------------------------------- sections

SEG_METRICS = ("dice", "jaccard", "threshold_jaccard", "accuracy", "sensitivity", "specificity")
CLS_METRICS = ("balanced_accuracy", "accuracy", "auc_macro", "top2_accuracy")


def _val(column):
    return (column.train.metrics.get("val") or {}) if column.train else {}


def _headline(column):
    return "dice" if column.task == "seg" else "balanced_accuracy"


def _overview(columns, cams, benches):
    rows = []
    for c in columns:
        cfg, m = c.config, (c.train.metrics if c.train else {})
        key = _headline(c)
        arch = cfg.get("arch") or m.get("arch") or "?"
        encoder = cfg.get("encoder") or m.get("encoder") or ""
        test_images = c.test.get("images")
        rows.append([
            f'<a href="#col-{_e(c.name)}">{_e(c.name)}</a>',
            {"seg": "segmentation", "cls": "classification"}[c.task],
            _e(f"{arch}/{encoder}" if encoder else arch),
            _number(cfg.get("image_size")),
            _number(m.get("epochs_run")),
            _e(c.env.get("backend", "")),
            f"{key.replace('_', ' ')} {_with_interval(_val(c), key)}" if _val(c) else "&ndash;",
            (f"{key.replace('_', ' ')} {_with_interval(c.test, key)} on {_number(test_images)}"
             if c.test else "&ndash;"),
            _number(m.get("params")),
            _number(m.get("size_mb"), 1),
            _number(m.get("train_minutes"), 1),
        ])
    parts = [_table(["run", "task", "model", "px", "epochs", "backend", "validation", "held-out", "parameters",
                     "MB", "train min"], rows)]
    extra = [f"{len(cams)} Grad-CAM folder(s)" if cams else "", f"{len(benches)} bench folder(s)" if benches else ""]
    if any(extra):
        parts.append(f"<p>Also: {', '.join(e for e in extra if e)}.</p>")
    return "".join(parts)


def _config_section(columns):
    """One table per task: the fields that differ between its runs (all fields for a single run)."""
    parts = []
    for task, title in (("seg", "Segmentation"), ("cls", "Classification")):
        group = [c for c in columns if c.task == task and c.train]
        if group:
            heading = f"<h3>{title}</h3>" if len({c.task for c in columns if c.train}) > 1 else ""
            parts.append(heading + _config_table(group))
    return "".join(parts) or "<p class=muted>No training configuration among these folders.</p>"


def _config_table(columns):
    configs = [c.config for c in columns]
    keys = sorted({k for cfg in configs for k in cfg})
    if not keys:
        return "<p class=muted>No training configuration among these folders.</p>"
    differing = [k for k in keys if len({json.dumps(cfg.get(k), sort_keys=True) for cfg in configs}) > 1]
    shown = differing if len(columns) > 1 else keys
    header = ["field"] + [_e(c.name) for c in columns]
    rows = [[_e(k)] + [_e(json.dumps(cfg.get(k))) if k in cfg else "&ndash;" for cfg in configs] for k in shown]
    parts = []
    if len(columns) > 1:
        parts.append(f"<p>{len(differing)} of {len(keys)} fields differ between the runs; all fields below.</p>")
        if rows:
            parts.append(_table(header, rows, sortable=False))
        all_rows = [[_e(k)] + [_e(json.dumps(cfg.get(k))) if k in cfg else "&ndash;" for cfg in configs]
                    for k in keys]
        parts.append(f"<details><summary>All {len(keys)} fields</summary>{_table(header, all_rows, False)}</details>")
    else:
        parts.append(_table(header, rows, sortable=False))
    return "".join(parts)


def _environment(columns):
    keys = ("backend", "keras", "python", "platform", "git_commit", "seed", "started", "command")
    header = ["field"] + [_e(c.name) for c in columns]
    envs = [c.env for c in columns]
    rows = [[k] + [_e(env.get(k, "")) for env in envs] for k in keys if any(k in env for env in envs)]
    rows.append(["resumed"] + [_number(len(env.get("resumes", []))) for env in envs])
    versions = sorted({k for env in envs for k in (env.get("versions") or {})})
    rows += [[_e(k)] + [_e((env.get("versions") or {}).get(k, "")) for env in envs] for k in versions]
    return _table(header, rows, sortable=False, cls="wrap")


def _skipped_block(folder):
    rows = _read_csv(folder.file("skipped.csv"))
    if not rows:
        return f"<p>No input skipped ({_e(folder.kind)}).</p>"
    shown = [[_e(r.get("path", "")), _e(r.get("reason", ""))] for r in rows[:20]]
    more = f"<p>... and {len(rows) - 20} more in {_e(folder.file('skipped.csv'))}</p>" if len(rows) > 20 else ""
    return (f"<p><b>{len(rows)} input(s) skipped</b> ({_e(folder.kind)}, listed in skipped.csv):</p>"
            + _table(["file", "reason"], shown, sortable=False, cls="wrap") + more)


def _data_cell(column):
    parts = []
    if column.train:
        split = column.split
        if split and "dx" in split[0]:
            classes = sorted({r["dx"] for r in split})
            subsets = ("train", "val", "test")
            table = {s: {c: 0 for c in classes} for s in subsets}
            for r in split:
                table.setdefault(r["subset"], {c: 0 for c in classes})[r["dx"]] += 1
            rows = [[_e(c)] + [_number(table[s][c]) for s in subsets] for c in classes]
            rows.append(["<b>all</b>"] + [_number(sum(table[s].values())) for s in subsets])
            cfg = column.config
            parts.append(f"<p>Split by {_e(cfg.get('split', '?'))} ({_e(cfg.get('fractions', ''))}), "
                         f"dataset {_e(cfg.get('dataset', ''))}:</p>")
            parts.append(_table(["class", "train", "val", "test"], rows))
            parts.append(_img_file(column.train.file("class_distribution.png"), "class distribution before and "
                                   "after balancing"))
        elif split:
            subsets = {}
            for r in split:
                subsets[r["subset"]] = subsets.get(r["subset"], 0) + 1
            parts.append("<p>Image/mask pairs: " + ", ".join(f"{_e(s)} {n}" for s, n in subsets.items()) + "</p>")
        parts.append(_skipped_block(column.train))
    for folder in column.evals:
        source = folder.metrics.get("source") or folder.metrics.get("pred_dir") or ""
        parts.append(f"<p>{_e(folder.kind)} {_e(os.path.basename(folder.path))}: "
                     f"{_number(folder.metrics.get('images'))} images {_e(source)}</p>")
        parts.append(_skipped_block(folder))
    return "".join(parts)


def _curves_cell(column):
    if not column.train:
        return ""
    metric = "dice" if column.task == "seg" else "accuracy"
    path = column.train.file("history.csv")
    return _figure(lambda buf: figures.plot_history(path, buf, metric=metric), f"training curves of {column.name}")


def _metrics_cell(column):
    names = SEG_METRICS if column.task == "seg" else CLS_METRICS
    sources = []
    if _val(column):
        sources.append((f"validation (best epoch {column.train.metrics.get('best_epoch', '?')})", _val(column)))
    for folder in column.evals:
        sources.append((f"{folder.kind} {os.path.basename(folder.path)}", folder.metrics))
    if not sources:
        return ""
    rows = [[_e(n.replace("_", " "))] + [_with_interval(m, n) for _, m in sources] for n in names
            if any(n in m for _, m in sources)]
    if any("accuracy" in m.get(PRIOR_CORRECTED, {}) for _, m in sources):
        rows += [[_e(f"{n.replace('_', ' ')}, balanced decision")]
                 + [_with_interval(m.get(PRIOR_CORRECTED, {}), n) for _, m in sources] for n in DECISION_METRICS]
    rows.append(["images"] + [_number(m.get("images", column.train.metrics.get("val_images") if column.train
                                                else None)) for _, m in sources])
    note = ""
    if not any(m.get("intervals") for _, m in sources):
        note = "<p class=muted>No intervals recorded for these runs.</p>"
    return _table(["metric"] + [_e(s) for s, _ in sources], rows, sortable=False) + note


def read_isic_predictions(pred_csv, truth_csv):
    """Reads an ISIC-format prediction CSV and its ground truth; returns (ids, labels, probabilities, classes).

    Args:
        pred_csv: `image` + one probability column per class.
        truth_csv: the same columns, one-hot.
    """
    pred, truth = _read_csv(pred_csv), _read_csv(truth_csv)
    if not pred or not truth:
        return None
    classes = [c for c in pred[0] if c != "image"]
    truth_by_id = {r["image"]: r for r in truth}
    ids = [r["image"] for r in pred if r["image"] in truth_by_id]
    probs = np.array([[float(r[c]) for c in classes] for r in pred if r["image"] in truth_by_id])
    labels = np.array([int(np.argmax([float(truth_by_id[i][c]) for c in classes])) for i in ids], np.int64)
    return ids, labels, probs, classes


def _predictions(column):
    """(title, ids, labels, probs, classes) of the held-out evaluation, else of the validation split."""
    for folder in column.evals:
        read = read_isic_predictions(folder.file("predictions.csv"), folder.file("ground_truth.csv"))
        if read:
            return (f"{folder.kind} {os.path.basename(folder.path)}", *read)
    if column.train:
        read = read_isic_predictions(column.train.file(VAL_PREDICTIONS), column.train.file(VAL_GROUND_TRUTH))
        if read:
            return ("validation", *read)
    return None


def _confusion_cell(column):
    found = column.predictions
    if not found:
        return ""
    title, _, labels, probs, classes = found
    return f"<p>{_e(title)}, {len(labels)} images</p>" + _figure(
        lambda buf: figures.plot_confusion(labels, probs.argmax(axis=1), classes, buf), f"confusion matrix {title}")


def _roc_cell(column):
    found = column.predictions
    if not found:
        return ""
    title, _, labels, probs, classes = found
    return f"<p>{_e(title)}</p>" + _figure(lambda buf: figures.plot_roc(labels, probs, classes, buf), f"ROC {title}")


def _per_class_cell(column):
    metrics = column.test or _val(column)
    per_class = metrics.get("per_class") or {}
    if not per_class:
        return ""
    rows = [[_e(name), _number(v.get("precision")), _number(v.get("recall")), _number(v.get("f1")),
             _number(v.get("auc")), _number(v.get("support"))] for name, v in per_class.items()]
    title = "held-out evaluation" if column.test else "validation"
    return f"<p>{title}</p>" + _table(["class", "precision", "recall", "F1", "AUC", "support"], rows)


def _interval_text(value, interval):
    text = _number(value)
    if interval and len(interval) == 2 and interval[0] is not None:
        text += f' <span class="ci">[{_number(interval[0])}, {_number(interval[1])}]</span>'
    return text


def _subgroup_rows(path):
    """The subgroup table of an evaluation, flagged groups highlighted, too-small ones greyed."""
    rows = _read_csv(path)
    if not rows:
        return ""
    scores = [("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."), ("auc_macro", "macro AUC"),
              ("melanoma_auc", "melanoma AUC"), ("ece", "ECE")]
    as_float = lambda v: float(v) if v not in ("", None) else None  # noqa: E731
    head = "".join(f"<th>{h}</th>" for h in ["family", "group", "images", "lesions"] + [t for _, t in scores]
                   + ["flagged"])
    body = []
    for row in rows:
        cls = "flag" if row.get("flagged") else ("small" if row.get("status") != "scored" else "")
        cells = [_e(row["family"]), _e(row["group"]), _e(row["images"]), _e(row["lesions"])]
        for key, _ in scores:
            if row.get("status") != "scored":
                cells.append("too small" if key == "accuracy" else "")
                continue
            gap = as_float(row.get(f"{key}_gap"))
            text = _interval_text(as_float(row.get(key)), [as_float(row.get(f"{key}_low")),
                                                           as_float(row.get(f"{key}_high"))])
            if row["family"] != "all" and gap is not None:
                text += f' <span class="ci">({gap:+.3f})</span>'
            cells.append(text)
        cells.append(_e(row.get("flagged", "")))
        body.append(f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _trust_cell(column):
    """Per evaluation: calibration raw and calibrated, referral and its operating points, TTA, subgroups."""
    parts = []
    for folder in column.evals:
        metrics = folder.metrics
        calibration = metrics.get("calibration")
        if folder.kind != "cls-eval" or not calibration:
            continue
        parts.append(f"<h4>{_e(os.path.basename(folder.path))}</h4><p class=cap>{_e(calibration.get('note', ''))}; "
                     f"test-time augmentation: {_e(metrics.get('tta', {}).get('mode', 'none'))}</p>")
        rows = [[name, *(_interval_text(block.get(k), (block.get("intervals") or {}).get(k))
                         for k in ("ece", "mce", "brier", "nll")),
                 *(_number((block.get("scores") or {}).get(k)) for k in ("balanced_accuracy", "auc_macro"))]
                for name, block in ((n, calibration[n]) for n in ("raw", "calibrated") if n in calibration)]
        parts.append(_table(["probabilities", "ECE", "MCE", "Brier", "NLL", "balanced acc.", "macro AUC"], rows,
                            sortable=False))
        parts.append(f"<p class=cap>{_e(calibration.get('binning', ''))}; 95% lesion-bootstrap intervals</p>")
        parts.append(_img_file(folder.file("reliability.png"), "reliability diagram"))
        referral = metrics.get("referral", {})
        if referral:
            areas = ", ".join(f"{_e(k)} {_number(v, 4)}" for k, v in referral.get("aurc", {}).items())
            parts.append(f"<p>Referral by {_e(referral.get('score', ''))}: AURC {areas} (lower is better)</p>")
            points = [[f"{p['target']:.0%}", _number(p.get("threshold"), 4), _number(p.get("coverage")),
                       _number(p.get("accuracy")), _number(p["here"].get("coverage")),
                       _number(p["here"].get("accuracy")), _number(p["here"].get("balanced_accuracy"))]
                      for p in referral.get("operating_points", [])]
            parts.append(_table(["target accuracy", "threshold", "val coverage", "val accuracy", "coverage",
                                 "accuracy", "balanced acc."], points, sortable=False))
            parts.append(f"<p class=cap>thresholds from {_e(referral.get('threshold_source', ''))}</p>")
            parts.append(_img_file(folder.file("risk_coverage.png"), "risk-coverage curve"))
        effect = metrics.get("tta", {})
        if effect.get("views", 1) > 1:
            rows = [[name, *(_number(effect[key].get(k)) for k in ("accuracy", "balanced_accuracy", "auc_macro",
                                                                    "ece", "nll"))]
                    for name, key in (("single view", "single_view"), (f"{effect['mode']} mean", "augmented"))]
            parts.append(_table(["test-time", "accuracy", "balanced acc.", "macro AUC", "ECE", "NLL"], rows,
                                sortable=False))
        groups = metrics.get("subgroups", {})
        if groups:
            parts.append(f"<p>Subgroups (fewer than {groups.get('min_size')} images: too small; flagged: the "
                         "group's interval of accuracy, balanced accuracy or an AUC excludes the whole set's value; "
                         "ECE grows as a group shrinks and does not flag)</p>")
            parts.append(_subgroup_rows(folder.file(groups.get("file", "subgroups.csv"))))
    return "".join(parts)


def _image_paths(column):
    return {r["image_id"]: r.get("image_path") for r in column.split}


def _cam_overlays(column, image_id):
    cells = []
    for folder in column.cams:
        overlays = os.path.join(folder.path, "overlays")
        if os.path.isdir(overlays):
            for name in sorted(os.listdir(overlays)):
                if name.startswith(f"{image_id}_model_"):
                    branch = name[len(image_id) + len("_model_"):-4]
                    cells.append(_img_file(os.path.join(overlays, name), f"CAM {branch} {image_id}")
                                 + f"<div class=cap>CAM ({_e(branch)})</div>")
    return cells


def _worst_cell(column):
    if column.task == "seg":
        parts = []
        for folder in ([column.train] if column.train else []) + column.evals:
            rows = _read_csv(folder.file(WORST_CSV))
            if not rows:
                continue
            title = "validation" if folder is column.train else f"{folder.kind} {os.path.basename(folder.path)}"
            parts.append(f"<p>{_e(title)}: the {len(rows)} lowest Dice (image | truth | prediction)</p>")
            for r in rows:
                parts.append('<figure>' + _img_file(folder.file(os.path.join(WORST_DIR, f"{r['image_id']}.png")),
                                                    f"worst {r['image_id']}")
                             + f"<figcaption>{_e(r['image_id'])} Dice {_number(float(r['dice']))}</figcaption>"
                               "</figure>")
        return "".join(parts)
    found = column.predictions
    if not found:
        return ""
    title, ids, labels, probs, classes = found
    p_true = probs[np.arange(len(labels)), labels]
    paths = _image_paths(column)
    parts = [f"<p>{_e(title)}: the {min(WORST_K, len(ids))} images with the lowest probability of their true "
             "class</p>"]
    for i in np.argsort(p_true, kind="stable")[:WORST_K]:
        image_id = ids[i]
        cells = [_thumbnail(paths[image_id], image_id) if paths.get(image_id) else
                 f'<span class="muted">{_e(image_id)}: image path unknown</span>']
        cells += _cam_overlays(column, image_id)
        caption = (f"{_e(image_id)}: true {_e(classes[labels[i]])} (p {_number(float(p_true[i]))}), "
                   f"predicted {_e(classes[int(probs[i].argmax())])} (p {_number(float(probs[i].max()))})")
        parts.append('<figure class="row">' + "".join(f"<div>{c}</div>" for c in cells)
                     + f"<figcaption>{caption}</figcaption></figure>")
    return "".join(parts)


def _gradcam_section(cams):
    parts = []
    for folder in cams:
        m = folder.metrics
        parts.append(f"<h3>{_e(os.path.basename(folder.path))}</h3>")
        parts.append(f"<p>{_e(m.get('method', 'gradcam'))} of the {_e(m.get('class', 'predicted'))} class on "
                     f"{_number(m.get('images'))} images ({_e(m.get('source', ''))}); lesion masks: "
                     f"{_e(m.get('mask_source', ''))}, backend {_e(m.get('backend', ''))}</p>")
        rows = []
        for label, model in (m.get("models") or {}).items():
            for branch, b in (model.get("branches") or {}).items():
                rows.append([_e(label), _e(model.get("name", "")), _e(branch), _e(b.get("layer", "")),
                             _number(b.get("mass_in_lesion")), _number(b.get("pointing_game")),
                             _number(b.get("images_measured")), _number(b.get("degenerate_maps")),
                             _e(b.get("note", ""))])
        parts.append(_table(["model", "name", "branch", "layer", "CAM mass in lesion", "pointing game", "images",
                             "degenerate", "note"], rows, cls="wrap"))
        parts.append(_img_file(folder.file("figure7.png"), f"Figure 7 grid {os.path.basename(folder.path)}"))
    return "".join(parts)


def _bench_section(benches):
    parts = []
    for folder in benches:
        rows = _read_csv(folder.file("bench.csv"))
        parts.append(f"<h3>{_e(os.path.basename(folder.path))}</h3>")
        if rows:
            header = list(rows[0])
            parts.append(_table([_e(h) for h in header], [[_e(r[h]) for h in header] for r in rows]))
        for name in sorted(os.listdir(folder.path)):
            if name.endswith(".png"):
                parts.append(_img_file(folder.file(name), f"bench {name}"))
    return "".join(parts)


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1b1f24;background:#fafbfc}
header{background:#24324a;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;font-size:13px;opacity:.85}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #d8dee4;padding:6px 24px;font-size:13px;z-index:2}
nav a{margin-right:14px;color:#24324a;text-decoration:none}
main{padding:8px 24px 40px;max-width:1500px}
section{background:#fff;border:1px solid #d8dee4;border-radius:6px;margin:16px 0;padding:8px 16px 14px}
h2{font-size:17px;margin:8px 0}h3{font-size:14px;margin:10px 0 6px;color:#24324a}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border:1px solid #d8dee4;padding:3px 7px;text-align:left;vertical-align:top;white-space:nowrap}
table.wrap td{white-space:normal;word-break:break-word;max-width:480px}
th{background:#f0f3f6}table.sortable th{cursor:pointer}
.side{display:flex;gap:16px;flex-wrap:wrap}.cell{flex:1 1 420px;min-width:0;overflow-x:auto}
img{max-width:100%;height:auto}.cell>img{max-width:min(100%,680px)}figure{display:inline-block;margin:6px 10px 6px 0;vertical-align:top}
figure.row{display:block}figure.row div{display:inline-block;margin-right:6px;vertical-align:top}
figcaption,.cap{font-size:12px;color:#444}.ci{color:#57606a;font-size:11.5px}.muted{color:#6e7781}
tr.flag td{background:#fde2e1}tr.small td{color:#6e7781}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var up = th.getAttribute('data-up') !== '1';
      th.setAttribute('data-up', up ? '1' : '0');
      var key = function (row) {
        var text = row.cells[col] ? row.cells[col].textContent.trim() : '';
        var n = parseFloat(text.replace(/,/g, ''));
        return isNaN(n) ? text.toLowerCase() : n;
      };
      rows.sort(function (a, b) { var x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def build_report(paths, title=None):
    """Returns the report of the given folders as one HTML string.

    Args:
        paths: run folders (training runs, evaluations, gradcam and bench folders).
        title: page title (default: the folder names).
    """
    columns, cams, benches = group_columns(paths)
    if not columns and not cams and not benches:
        raise ValueError("report: give at least one run folder")
    if title is None:
        title = "skinkeras report: " + ", ".join(c.name for c in columns) if columns else "skinkeras report"
    sections = {"overview": _overview(columns, cams, benches), "config": _config_section(columns),
                "environment": _environment(columns) if columns else ""}
    per_column = {"data": _data_cell, "curves": _curves_cell, "metrics": _metrics_cell,
                  "confusion": _confusion_cell, "roc": _roc_cell, "per-class": _per_class_cell,
                  "trust": _trust_cell, "worst": _worst_cell}
    for key, draw in per_column.items():
        # A section shows the models that have something for it (a confusion matrix is no segmentation's).
        cells = [(c, draw(c)) for c in columns]
        shown = cells if key in MAIN_SECTIONS else [(c, body) for c, body in cells if body]
        if shown:
            sections[key] = _columns([_cell(c, body) for c, body in shown])
    if cams:
        sections["gradcam"] = _gradcam_section(cams)
    if benches:
        sections["bench"] = _bench_section(benches)
    order = [k for k in SECTION_TITLES if k in sections]
    nav = "".join(f'<a href="#{k}">{SECTION_TITLES[k]}</a>' for k in order)
    body = "".join(f'<section id="{k}"><h2>{SECTION_TITLES[k]}</h2>{sections[k]}</section>' for k in order)
    anchors = "".join(f'<a id="col-{_e(c.name)}"></a>' for c in columns)
    folders = ", ".join(_e(p) for p in paths)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>{folders}</p></header><nav>{nav}</nav><main>{anchors}{body}</main>"
            f"<script>{SORT_SCRIPT}</script></body></html>")


def write_report(paths, out, title=None):
    """Writes the self-contained HTML report of the given folders; returns its path.

    Args:
        paths: run folders (training runs, evaluations, gradcam and bench folders), one or several.
        out: the .html file to write (its folder is created).
        title: page title.
    """
    page = build_report([str(p) for p in paths], title)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{out}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):  # a full disk must not leave half a page behind
            os.remove(tmp)
        raise
    return out


def write_run_report(run_dir):
    """Writes RUN/report.html at the end of a command; a failure is reported in one line, never raised.

    The run's finished work is on disk before this is called, so a report that cannot
    be drawn must not turn a finished run into a failed one.

    Args:
        run_dir: the run folder.
    """
    try:
        return write_report([run_dir], os.path.join(run_dir, REPORT_HTML))
    except Exception as exc:  # noqa: BLE001 - see above
        print(f"warning: could not write {os.path.join(run_dir, REPORT_HTML)}: {type(exc).__name__}: {exc}")
        return None
