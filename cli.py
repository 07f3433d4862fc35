#!/usr/bin/env python
"""skinkeras command line: options -> config -> library call. Run `python cli.py --help`."""

import errno
import functools
import os
import sys

import click

VALID_BACKENDS = ("jax", "tensorflow", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides the progress output


def check_backend():
    """Fails with one line when KERAS_BACKEND names a backend we do not support."""
    backend = os.environ.get("KERAS_BACKEND")
    if backend and backend not in VALID_BACKENDS:
        raise click.ClickException(f"Unknown KERAS_BACKEND={backend!r}; valid: {', '.join(VALID_BACKENDS)}")


def friendly_errors(func):
    """Turns the library's input errors into one-line CLI errors instead of tracebacks."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        check_backend()
        from skinkeras.models.encoders import WeightsUnavailableError

        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError, FileExistsError, WeightsUnavailableError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise click.ClickException(message) from None
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            where = exc.filename or "the output folder"
            message = exc.strerror if exc.strerror and "free" in exc.strerror else (
                f"No space left on device writing {where}; free space, then continue with --resume")
            raise click.ClickException(message) from None

    return wrapper


def options(*decorators):
    """Applies a group of click options in the order they are listed (shown in that order by --help)."""

    def apply(func):
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def train_options(func):
    """Options every training command shares (they become `TrainConfig` fields)."""
    return options(
        click.option("--encoder", default=None, help="Encoder table name."),
        click.option("--weights", default=None, help="imagenet (default) | none | PATH to encoder weights."),
        click.option("--image-size", type=int, default=None, help="Square input size."),
        click.option("--epochs", type=int, default=None, help="Training epochs (with --resume: the new total)."),
        click.option("--batch-size", type=int, default=None),
        click.option("--lr", "learning_rate", type=float, default=None, help="Adam learning rate (default 1e-4)."),
        click.option("--limit", type=int, default=None, help="Use N items of a seeded order."),
        click.option("--seed", type=int, default=None, help="Default 0."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="experiments/*.toml with values that differ from the defaults."),
        click.option("--out", default=None, help="Run folder (default runs/<command>-<timestamp>)."),
        click.option("--resume", is_flag=True,
                     help="Continue the run in --out from its last.keras with its saved config."),
        click.option("--overwrite", is_flag=True, help="Replace the run that --out holds (its files are removed)."),
        devices_option,
        cache_option,
        click.option("--precision", type=click.Choice(PRECISION_CHOICES), default=None,
                     help="fp32 (default) | bf16 | fp16 compute (Keras mixed policies; fp16 adds loss scaling)."),
        click.option("--jit-compile/--no-jit-compile", default=None,
                     help="Compile the train step: torch.compile on torch; off = no XLA on TensorFlow (default: "
                          "Keras' auto)."),
        click.option("--data-format", type=click.Choice(DATA_FORMAT_CHOICES), default=None,
                     help="Layout of the classifiers' CNN encoders: channels_first is torch's native one (default: "
                          "Keras' image_data_format)."),
        click.option("--num-processes", type=int, default=None,
                     help="Processes of one multi-process run (JAX; or KERAS_DISTRIBUTION_NUM_PROCESSES)."),
        click.option("--process-id", type=int, default=None, help="This process, 0..N-1 (0 writes the run folder)."),
        click.option("--coordinator", default=None, help="HOST:PORT of process 0 (KERAS_DISTRIBUTION_JOB_ADDRESSES)."),
    )(func)


devices_option = click.option("--devices", default=None,
                              help="Data-parallel devices: auto (default: every accelerator; 1 on a CPU) | N.")
PRECISION_CHOICES = ("fp32", "bf16", "fp16")  # skinkeras.precision.PRECISIONS; the CLI stays import-light
DATA_FORMAT_CHOICES = ("channels_last", "channels_first")  # skinkeras.models.layout.FORMATS
precision_option = click.option("--precision", type=click.Choice(PRECISION_CHOICES), default=None,
                                help="Predict in fp32 | bf16 | fp16 (default: the precision the model was trained in).")
TTA_CHOICES = ("none", "flip", "flip-rotate")  # skinkeras.data.pipeline.TTA_VIEWS
cache_option = click.option("--cache", type=click.Path(file_okay=False), default=None,
                            help="Input cache written by `prepare`: read instead of decoding the image files.")


def train_config(cls, config_file, resume, overwrite, **values):
    """Options -> a training config; with --resume only --out and --epochs count (the run's config is reused)."""
    from skinkeras.config import resolve
    from skinkeras.distribute import set_cluster_env

    set_cluster_env(values.pop("num_processes"), values.pop("process_id"), values.pop("coordinator"))
    if resume and not values.get("out"):
        raise ValueError("--resume needs --out RUN_DIR of the run to continue")
    if overwrite and not values.get("out"):
        raise ValueError("--overwrite needs --out RUN_DIR of the run to replace")
    return resolve(cls, config_file, **values)


def data_options(func):
    """--data-dir | --images/--masks, --limit: shared by every command that reads a labelled set."""
    func = click.option("--limit", type=int, default=None, help="Use the first N pairs of a seeded order.")(func)
    func = click.option("--masks", type=click.Path(file_okay=False), default=None,
                        help="Mask folder (ID_segmentation.png, ID_lesion.png, ID.png).")(func)
    func = click.option("--images", type=click.Path(file_okay=False), default=None,
                        help="Plain image folder, instead of --data-dir.")(func)
    func = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help="ISIC 2018 Task 1 folder in the official layout.")(func)
    return func


def scored(metrics, name):
    """`name=0.8123 [0.7741, 0.8502]`: a score of metrics.json with its interval where one was computed."""
    value = metrics.get(name)
    if value is None:
        return f"{name}=n/a"
    interval = (metrics.get("intervals") or {}).get(name)
    return f"{name}={value:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")


def bootstrap_options(func):
    """--bootstrap N, --seed: the 95% intervals every evaluation writes into metrics.json."""
    func = click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap (and of --limit).")(func)
    func = click.option("--bootstrap", default=1000, show_default=True,
                        help="Bootstrap resamples for the 95% intervals (0: none).")(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--verbose", is_flag=True, help="Keep TensorFlow's C++ start-up lines (CUDA probing, CPU features).")
def cli(verbose):
    """skinkeras: Deep-UNet segmentation, TDBN classification and Grad-CAM on JAX, TensorFlow or PyTorch.

    The backend is chosen with the KERAS_BACKEND environment variable (jax, tensorflow, torch).
    """
    if verbose:
        os.environ["SKINKERAS_VERBOSE"] = "1"  # read by skinkeras.backend_config when skinkeras is imported


@cli.command("make-synthetic")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--n", default=200, show_default=True, help="Images per dataset.")
@click.option("--seed", default=0, show_default=True)
@click.option("--datasets", default="isic2018,ham10000,isic2019", show_default=True,
              help="Comma-separated, any of isic2018, ham10000, isic2019, ph2, isic2017.")
@friendly_errors
def make_synthetic_cmd(out, n, seed, datasets):
    """Generate synthetic datasets in the official layouts (ISIC 2018 Task 1, HAM10000, ISIC 2019, PH2, ISIC 2017)."""
    from skinkeras.data.synthetic import make_synthetic

    names = [d.strip() for d in datasets.split(",") if d.strip()]
    if not names:
        raise ValueError("--datasets is empty; give e.g. --datasets ph2,isic2017")
    folders = make_synthetic(out, n=n, seed=seed, datasets=names)
    for name, folder in folders.items():
        click.echo(f"{name}: {folder}")


@cli.command("prepare")
@click.option("--dataset", required=True, help="isic2018 (image/mask pairs) | ham10000 | isic2019")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Dataset folder, official layout.")
@click.option("--images", type=click.Path(file_okay=False), multiple=True, help="Image folder(s), as the train "
                                                                               "command takes them.")
@click.option("--masks", type=click.Path(file_okay=False), default=None, help="Mask folder (isic2018 with --images).")
@click.option("--seg-dir", type=click.Path(file_okay=False), default=None,
              help="SEGDIR of `segment`: also cache its segmented images (classification).")
@click.option("--subset", default="train", show_default=True, help="Official subset of an isic2018 --data-dir.")
@click.option("--image-size", type=int, required=True, help="Square size in px; the runs must use the same.")
@click.option("--workers", default=2, show_default=True, help="Decoding threads.")
@click.option("--out", required=True, help="Cache folder (CACHE), then `--cache CACHE` on the commands.")
@friendly_errors
def prepare_cmd(dataset, data_dir, images, masks, seg_dir, subset, image_size, workers, out):
    """Decode and resize every image, mask and segmented image once into memory-mapped arrays (an input cache)."""
    import time

    from skinkeras.data.cache import prepare_cache

    start = time.perf_counter()
    cache = prepare_cache(out, dataset, image_size, data_dir, list(images) or None, masks, seg_dir, subset,
                          workers=workers)
    failed = sum(cache.manifest["not_decoded"].values())
    click.echo(f"{len(cache)} rows ({', '.join(cache.arrays)}) at {cache.image_size} px in "
               f"{time.perf_counter() - start:.1f} s, {failed} files not decoded -> {out}")


@cli.command("seg-train")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="ISIC 2018 Task 1 folder in the official layout.")
@click.option("--images", type=click.Path(file_okay=False), default=None, help="Plain image folder, instead of --data-dir.")
@click.option("--masks", type=click.Path(file_okay=False), default=None,
              help="Mask folder (ID_segmentation.png, ID_lesion.png, ID.png).")
@click.option("--arch", default=None, help="deep_unet (default) | unet | unetpp | deeplabv3plus")
@train_options
@friendly_errors
def seg_train_cmd(config_file, resume, overwrite, **values):
    """Train a segmentation model (paper 4.1) and write its run folder."""
    from skinkeras.config import SegTrainConfig
    from skinkeras.segmentation.train import train_segmentation

    cfg = train_config(SegTrainConfig, config_file, resume, overwrite, **values)
    run_dir = train_segmentation(cfg, resume=resume, resume_epochs=values["epochs"] if resume else None,
                                 overwrite=overwrite)
    click.echo(f"Run folder: {run_dir}")


@cli.command("seg-eval")
@click.option("--model", type=click.Path(dir_okay=False), default=None, help="RUN/best.keras")
@data_options
@click.option("--subset", default="train", show_default=True, help="Official subset with --data-dir: train|val|test.")
@click.option("--truth-dir", type=click.Path(file_okay=False), default=None, help="Score existing masks: truth.")
@click.option("--pred-dir", type=click.Path(file_okay=False), default=None, help="Score existing masks: predictions.")
@click.option("--dataset", default="isic2018", show_default=True,
              help="Layout of --data-dir: isic2018 | ph2 | isic2017 (external validation).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@bootstrap_options
@devices_option
@cache_option
@precision_option
@click.option("--out", default=None, help="Output folder (default runs/seg-eval-<timestamp>).")
@friendly_errors
def seg_eval_cmd(out, devices, **values):
    """Score segmentation: predict + score a labelled set, or score existing mask folders."""
    from skinkeras import runs
    from skinkeras.config import SegEvalConfig
    from skinkeras.segmentation.evaluate import evaluate_segmentation

    out = out or runs.default_run_dir("seg-eval")
    metrics = evaluate_segmentation(SegEvalConfig(out=out, devices=devices or "auto", **values))
    click.echo(" ".join(scored(metrics, k) for k in ("dice", "jaccard", "threshold_jaccard", "accuracy",
                                                     "sensitivity", "specificity")))
    click.echo(f"Results: {out}")


@cli.command("segment")
@click.option("--model", type=click.Path(dir_okay=False), required=True, help="RUN/best.keras")
@click.option("--images", type=click.Path(file_okay=False), multiple=True,
              help="Image folder (repeat for HAM10000 part_1 / part_2).")
@click.option("--dataset", default=None, help="Or every image of an external set: ph2 | isic2017 (with --data-dir).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="That set's folder, official layout.")
@click.option("--subset", default="test", show_default=True, help="Its official subset (isic2017).")
@click.option("--out", required=True, help="Output folder (SEGDIR) read by the classification stage.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@devices_option
@precision_option
@friendly_errors
def segment_cmd(model, images, out, batch_size, devices, dataset, data_dir, subset, precision):
    """Write predicted masks and segmented images (original x mask) for image folders."""
    from skinkeras.config import SegmentConfig
    from skinkeras.segmentation.segment import segment

    reports = segment(SegmentConfig(model=model, images=list(images), out=out, batch_size=batch_size,
                                   devices=devices or "auto", dataset=dataset, data_dir=data_dir, subset=subset,
                                   precision=precision))
    for report in reports:
        click.echo(f"{report['source']}: {report['written']} written, {report['already_there']} already there, "
                   f"{report['skipped']} skipped -> {out}")


@cli.command("cls-train")
@click.option("--dataset", default=None, help="ham10000 (default) | isic2019")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Dataset folder, official layout.")
@click.option("--images", type=click.Path(file_okay=False), multiple=True, help="Image folder(s), if not the official ones.")
@click.option("--seg-dir", type=click.Path(file_okay=False), default=None, help="Folder written by `segment`.")
@click.option("--variant", default=None, help="tdbn (default) | tdbn_no_meta | original_only | segmented_only")
@click.option("--arch", default=None, help="Table 2 baseline instead: densenet201|resnet50|xception|mobilenetv2|"
                                           "efficientnetb3|vit")
@click.option("--split", default=None, help="lesion (default, grouped by lesion_id) | image")
@click.option("--metadata-encoder", default=None, help="mlp (default, Eq. 7) | transformer")
@train_options
@friendly_errors
def cls_train_cmd(config_file, resume, overwrite, images, variant, arch, **values):
    """Train the TDBN classifier, an ablation or a baseline (paper 5-6) and write its run folder."""
    from skinkeras.classification.train import train_classification
    from skinkeras.config import ClsTrainConfig

    if variant and arch:
        raise ValueError("Give --variant (a TDBN variant) or --arch (a Table 2 baseline), not both")
    cfg = train_config(ClsTrainConfig, config_file, resume, overwrite, images=list(images) or None,
                       arch=variant or arch, **values)
    run_dir = train_classification(cfg, resume=resume, resume_epochs=values["epochs"] if resume else None,
                                   overwrite=overwrite)
    click.echo(f"Run folder: {run_dir}")


def tta_option(func):
    """--tta: mean of the probabilities over test-time views of each image."""
    return click.option("--tta", default="none", show_default=True,
                        type=click.Choice(TTA_CHOICES),
                        help="Test-time augmentation: mean over flips (and 90-degree rotations), with its spread.")(func)


def calibration_option(func):
    """--no-calibration: the model's raw probabilities instead of the run's calibrated ones."""
    return click.option("--no-calibration", "calibration", is_flag=True, flag_value=False, default=True,
                        help="Raw probabilities (default: temperature-scaled by the run's calibration.json).")(func)


@cli.command("cls-eval")
@click.option("--model", type=click.Path(dir_okay=False), required=True, help="RUN/best.keras")
@click.option("--subset", default="test", show_default=True, help="Split subset of the run to evaluate.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Evaluate another dataset folder.")
@click.option("--images", type=click.Path(file_okay=False), multiple=True, help="Its image folder(s).")
@click.option("--seg-dir", type=click.Path(file_okay=False), default=None, help="Its segmented images.")
@click.option("--dataset", default=None,
              help="An external set in --data-dir, scored on the classes it has: ph2 | isic2017.")
@click.option("--against", type=click.Path(file_okay=False), default=None,
              help="Another model's cls-eval folder on the same images: paired bootstrap differences.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@tta_option
@calibration_option
@click.option("--refer-at", default="0.90,0.95", show_default=True,
              help="Target accuracies of the referral operating points (thresholds chosen on validation).")
@click.option("--min-group", type=int, default=30, show_default=True,
              help="Subgroups with fewer images are listed as too small instead of scored.")
@bootstrap_options
@devices_option
@cache_option
@precision_option
@click.option("--out", default=None, help="Output folder (default runs/cls-eval-<timestamp>).")
@friendly_errors
def cls_eval_cmd(out, images, devices, **values):
    """Evaluate a classifier: metrics.json, ISIC-format predictions.csv, confusion matrix and ROC plots."""
    from skinkeras import runs
    from skinkeras.classification.evaluate import evaluate_classification
    from skinkeras.config import ClsEvalConfig
    from skinkeras.metrics import PRIOR_CORRECTED

    out = out or runs.default_run_dir("cls-eval")
    metrics = evaluate_classification(ClsEvalConfig(out=out, images=list(images) or None, devices=devices or "auto", **values))
    names = ("accuracy", "balanced_accuracy", "auc_macro", "melanoma_auc", "top2_accuracy")
    click.echo(" ".join(scored(metrics, k) for k in names) + f" on {metrics['images']} images")
    if metrics.get("intervals"):
        click.echo(f"[95% bootstrap intervals, {metrics['bootstrap']['resamples']} resamples by "
                   f"{metrics['bootstrap']['unit']}]")
    balanced = metrics.get(PRIOR_CORRECTED, {})
    click.echo("balanced decision (probabilities / training class shares): "
               + (" ".join(scored(balanced, k) for k in ("balanced_accuracy", "accuracy"))
                  if "accuracy" in balanced else balanced.get("skipped", "n/a")))
    if metrics.get("paired"):
        diff = metrics["paired"]["balanced_accuracy"]
        click.echo(f"balanced accuracy minus {metrics['paired']['against']}: {diff['difference']:+.4f} "
                   f"[{diff['interval'][0]:+.4f}, {diff['interval'][1]:+.4f}], p={diff['p_value']:.3f}")
    echo_trust(metrics)
    click.echo(f"Results: {out}")


def echo_trust(metrics):
    """Calibration, referral, TTA and subgroup lines of a cls-eval's metrics."""
    calibration = metrics.get("calibration", {})
    errors = [f"{name} ECE={calibration[name]['ece']:.4f}" for name in ("raw", "calibrated") if name in calibration]
    click.echo(f"calibration: {', '.join(errors)} ({calibration.get('binning', '')}); {calibration.get('note', '')}")
    referral = metrics.get("referral", {})
    click.echo("referral AURC: " + ", ".join(f"{k}={v:.4f}" for k, v in referral.get("aurc", {}).items()))
    for point in referral.get("operating_points", []):
        here = point["here"]
        click.echo(f"  target {point['target']:.0%}: " + (
            "no validation threshold reaches it (refer every case)" if point["threshold"] is None else
            f"threshold {point['threshold']:.4f} keeps {here['coverage']:.1%} at accuracy "
            + ("n/a" if here["accuracy"] is None else f"{here['accuracy']:.4f}")))
    click.echo(f"  thresholds from {referral.get('threshold_source', 'n/a')}")
    effect = metrics.get("tta", {})
    if effect.get("views", 1) > 1:
        one, many = effect["single_view"], effect["augmented"]
        click.echo(f"tta {effect['mode']} ({effect['views']} views): balanced_accuracy {one['balanced_accuracy']:.4f} "
                   f"-> {many['balanced_accuracy']:.4f}, ECE {one['ece']:.4f} -> {many['ece']:.4f}")
    groups = metrics.get("subgroups", {})
    if groups:
        click.echo(f"subgroups: {groups['groups']} groups ({groups['too_small']} too small); flagged: "
                   + ("; ".join(groups["flagged"]) or "none") + f" -> {groups['file']}")


@cli.command("cls-calibrate")
@click.option("--run", "run", type=click.Path(exists=True), required=True,
              help="A cls-train run folder (or a .keras inside it; default its best.keras).")
@click.option("--refer-at", default="0.90,0.95", show_default=True,
              help="Target accuracies of the referral thresholds, chosen on the validation split.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@devices_option
@cache_option
@friendly_errors
def cls_calibrate_cmd(devices, **values):
    """Fit a run's temperature (validation NLL) and referral thresholds; writes RUN/calibration.json."""
    from skinkeras.classification.calibrate import run_calibrate
    from skinkeras.config import CalibrateConfig

    found = run_calibrate(CalibrateConfig(devices=devices or "auto", **values))
    click.echo(f"temperature {found['temperature']:.4f} on {found['fitted_on']['images']} validation images: "
               f"NLL {found['raw']['nll']:.4f} -> {found['calibrated']['nll']:.4f}, "
               f"ECE {found['raw']['ece']:.4f} -> {found['calibrated']['ece']:.4f}")
    for point in found["referral"]["targets"]:
        click.echo(f"  refer below {point['threshold']:.4f}: {point['coverage']:.1%} kept at accuracy "
                   f"{point['accuracy']:.4f} (target {point['target']:.0%})" if point["threshold"] is not None else
                   f"  target {point['target']:.0%}: no threshold reaches it on validation")


@cli.command("cls-anchor")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, exists=True), required=True,
              help="A cls-train run folder: the anchor is fitted on its training split.")
@click.option("--subset", default="test", show_default=True, help="Its split subset to score.")
@bootstrap_options
@click.option("--out", default=None, help="Output folder (default runs/cls-anchor-<timestamp>).")
@friendly_errors
def cls_anchor_cmd(run_dir, subset, bootstrap, seed, out):
    """Classical anchor (colour histograms + metadata, logistic regression) on a run's split, as a cls-eval folder."""
    from skinkeras import runs
    from skinkeras.classification.anchor import cls_anchor

    out = out or runs.default_run_dir("cls-anchor")
    metrics = cls_anchor(run_dir, out, subset, bootstrap, seed)
    click.echo(" ".join(scored(metrics, k) for k in ("accuracy", "balanced_accuracy", "auc_macro", "melanoma_auc"))
               + f" on {metrics['images']} images (fitted on {metrics['train_images']})")
    click.echo(f"Compare a model on the same lesions: cls-eval --model RUN/best.keras --against {out}")
    click.echo(f"Results: {out}")


@cli.command("cls-diagnose")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, exists=True), required=True,
              help="RUN/best.keras of a tdbn or tdbn_no_meta run.")
@click.option("--subset", default="test", show_default=True, help="Its split subset.")
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Input cache holding the subset's originals and segmented images.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--out", default=None, help="Output folder (default runs/cls-diagnose-<timestamp>).")
@friendly_errors
def cls_diagnose_cmd(model_path, subset, cache, batch_size, out):
    """How much the TDBN's segmented branch moves its output, and how spread its cross-attention is."""
    from skinkeras import runs
    from skinkeras.classification.diagnose import cls_diagnose

    out = out or runs.default_run_dir("cls-diagnose")
    result = cls_diagnose(model_path, out, subset, batch_size, cache)
    for name, change in result["branch_influence"].items():
        click.echo(f"{name}: mean |change| of the probabilities {change['mean_abs_change']:.4f}, "
                   f"{change['flips']} of {result['images']} decisions flip, balanced accuracy "
                   f"{result['balanced_accuracy'][name]:.4f} (as given {result['balanced_accuracy']['as_given']:.4f})")
    att = result["attention"]
    click.echo(f"attention over {att['tokens']} tokens: mean entropy {att['mean_entropy']:.4f} nats, uniform "
               f"{att['uniform_entropy']:.4f}")
    click.echo(f"Results: {out}")


@cli.command("seg-otsu")
@click.option("--images", type=click.Path(file_okay=False), required=True, help="Image folder.")
@click.option("--out", required=True, help="Output folder; masks go to OUT/masks/ID_segmentation.png.")
@friendly_errors
def seg_otsu_cmd(images, out):
    """Classical baseline: Otsu threshold on the blue channel (score it with seg-eval --truth-dir/--pred-dir)."""
    from skinkeras import runs
    from skinkeras.data.isic2018 import list_images
    from skinkeras.otsu import segment_folder_otsu

    bar = click.progressbar(length=len(list_images(images)), label="otsu")
    with bar:
        result = segment_folder_otsu(images, out, progress=lambda *_: bar.update(1))
    runs.write_skipped(out, result["skipped"])
    click.echo(f"{result['written']} masks -> {result['pred_dir']} ({len(result['skipped'])} skipped)")


@cli.command("reproduce")
@click.argument("tables", nargs=-1, required=True)
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="TOML: these options' values plus [segmentation] / [classification] tables of run settings.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Classification set (Tables 2, 3).")
@click.option("--dataset", default=None, help="ham10000 (default) | isic2019")
@click.option("--images", type=click.Path(file_okay=False), multiple=True, help="Its image folder(s).")
@click.option("--seg-dir", type=click.Path(file_okay=False), default=None,
              help="Its segmented images, if already made (default: made with the Table 1 Deep-UNet).")
@click.option("--seg-data-dir", type=click.Path(file_okay=False), default=None,
              help="Segmentation training set, ISIC 2018 Task 1 layout.")
@click.option("--seg-images", type=click.Path(file_okay=False), default=None, help="Or a plain image folder...")
@click.option("--seg-masks", type=click.Path(file_okay=False), default=None, help="...and its masks.")
@click.option("--seg-eval-data-dir", type=click.Path(file_okay=False), default=None,
              help="Table 1 evaluation set (default: the training set's --seg-eval-subset).")
@click.option("--seg-eval-dataset", default=None, help="Its layout: isic2018 (default) | ph2 | isic2017.")
@click.option("--seg-eval-subset", default=None, help="Its official subset (default val).")
@click.option("--seg-eval-images", type=click.Path(file_okay=False), default=None, help="Or plain folders...")
@click.option("--seg-eval-masks", type=click.Path(file_okay=False), default=None, help="...of images and masks.")
@click.option("--epochs", type=int, default=None, help="Epochs of every run.")
@click.option("--image-size", type=int, default=None, help="Input size of every run.")
@click.option("--limit", type=int, default=None, help="N items of a seeded order in every run.")
@click.option("--encoder", default=None, help="Encoder of the Table 1 models and the TDBN variants.")
@click.option("--weights", default=None,
              help="Encoder weights of every row: imagenet (default) | none | PATH (as on the training commands).")
@click.option("--rows", default=None, help="Only these rows, comma-separated architecture names.")
@click.option("--external", multiple=True, help="NAME=DIR of an external set (ph2, isic2017): extra columns.")
@click.option("--batch-size", type=int, default=None, help="Prediction batch size of the evaluations.")
@click.option("--cache/--no-cache", default=None,
              help="Read the rows' inputs from caches under OUT/cache, each set decoded once (default on).")
@click.option("--bootstrap", type=int, default=None, help="Bootstrap resamples (default 1000).")
@click.option("--seed", type=int, default=None)
@devices_option
@click.option("--out", required=True, help="Results folder (re-running it keeps finished rows).")
@friendly_errors
def reproduce_cmd(tables, config_file, images, rows, external, **values):
    """Train and score every row of the paper's tables (table1 | table2 | table3 | all) beside its numbers."""
    from skinkeras.config import ReproduceConfig, resolve
    from skinkeras.reproduce import RESULTS_MD, reproduce

    pairs = {}
    for item in external:
        name, sep, folder = item.partition("=")
        if not sep or not folder:
            raise ValueError(f"--external {item!r}: give NAME=DIR, e.g. --external ph2=/data/PH2")
        pairs[name.strip()] = folder
    cfg = resolve(ReproduceConfig, config_file, tables=list(tables), images=list(images) or None,
                  rows=[r.strip() for r in rows.split(",") if r.strip()] if rows else None, **values)
    if pairs:
        cfg.external = {**cfg.external, **pairs}
        cfg.check()
    records = reproduce(cfg)
    failed = [r for r in records if r["status"] != "ok"]
    click.echo(f"{len(records) - len(failed)} of {len(records)} rows done; results: "
               f"{os.path.join(cfg.out, RESULTS_MD)}")
    for r in failed:
        click.echo(f"FAILED {r['table']} {r['row']}: {r['error']} (details in {os.path.join(cfg.out, 'errors.log')})")
    if failed:
        sys.exit(1)


@cli.command("bench")
@click.option("--model", "--arch", "models", multiple=True, default=("deep_unet",), show_default=True,
              help="Registry model (tdbn, a Table 2 classifier, deep_unet, unet, ...); repeatable.")
@click.option("--encoder", "encoders", multiple=True, default=(),
              help="Encoder of the TDBN variants and segmentation models; repeatable (default: each model's).")
@click.option("--mode", "modes", multiple=True, default=("train",), show_default=True,
              help="train | infer | input (the training input pipeline); repeatable.")
@click.option("--image-size", default=224, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--steps", default=3, show_default=True, help="Timed steps per repeat, after the first.")
@click.option("--repeats", default=3, show_default=True, help="Timed repeats (median and min / max of images/s).")
@click.option("--precision", default="fp32", show_default=True, help="fp32 | bf16 | fp16")
@click.option("--backends", default=None,
              help="Comma-separated: jax, tensorflow, torch, torch-compile, torch-channels_first, torch-reference, "
                   "torch-reference-channels_last (default: the current one).")
@click.option("--devices", default="1", show_default=True,
              help="Data-parallel device counts, comma-separated (e.g. 1,2); --batch-size is the global batch.")
@click.option("--out", default=None, help="Folder for bench.csv, bench.md, bench.png (default runs/bench-<timestamp>).")
@friendly_errors
def bench_cmd(models, encoders, modes, image_size, batch_size, steps, repeats, precision, backends, devices, out):
    """Measure build, first step, steady images/s, FLOPs and memory per model, mode and backend; writes a table."""
    from skinkeras import runs
    from skinkeras.bench import run_bench

    run_bench(models, encoders, modes, image_size, batch_size, steps, repeats, precision, backends,
              out or runs.default_run_dir("bench"), echo=click.echo, devices=devices, isolate=True)


@cli.command("gradcam")
@click.option("--model", type=click.Path(dir_okay=False), required=True,
              help="RUN/best.keras of cls-train (e.g. the TDBN).")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="Another classifier's .keras shown beside it (e.g. the DenseNet201 baseline).")
@click.option("--images", type=click.Path(file_okay=False), default=None,
              help="Explain this image folder (no labels or metadata) instead of the run's split.")
@click.option("--split", "subset", default="test", show_default=True, help="Split subset of the run: train|val|test.")
@click.option("--n", default=16, show_default=True, help="Images (a seeded sample); 0 = all.")
@click.option("--layer", default=None, help="Target layer (default: each encoder's last block), e.g. conv5_block32_concat.")
@click.option("--class", "class_name", default=None, help="Explain this class (default: the predicted one).")
@click.option("--method", default="gradcam", show_default=True, help="gradcam | layercam")
@click.option("--masks", type=click.Path(file_okay=False), default=None,
              help="Lesion masks (ID_segmentation.png) for the measures; default: the dataset's, else SEGDIR/masks.")
@click.option("--seg-dir", type=click.Path(file_okay=False), default=None, help="SEGDIR, when not the run's.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@cache_option
@click.option("--out", default=None, help="Output folder (default runs/gradcam-<timestamp>).")
@friendly_errors
def gradcam_cmd(out, **values):
    """Grad-CAM overlays, the Figure 7 grid, cams.npz and cam_metrics.json (CAM mass in the lesion, pointing game)."""
    from skinkeras import runs
    from skinkeras.config import ExplainConfig
    from skinkeras.explain.cam_report import gradcam

    out = out or runs.default_run_dir("gradcam")
    metrics = gradcam(ExplainConfig(out=out, **values))
    for label, model in metrics["models"].items():
        for branch, values in model["branches"].items():
            mass, point = values["mass_in_lesion"], values["pointing_game"]
            click.echo(f"{label} ({model['name']}) {branch}: mass in lesion "
                       f"{'n/a' if mass is None else format(mass, '.3f')}, pointing game "
                       f"{'n/a' if point is None else format(point, '.3f')} on {values['images_measured']} images")
    click.echo(f"Masks: {metrics['mask_source'] or 'none found (no measures)'}")
    click.echo(f"Results: {out}")


@cli.command("predict")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--seg-model", type=click.Path(dir_okay=False), required=True, help="Segmentation .keras (seg-train).")
@click.option("--cls-model", type=click.Path(dir_okay=False), required=True, help="RUN/best.keras of cls-train.")
@click.option("--age", type=float, default=None, help="Age in years (omit if unknown).")
@click.option("--sex", default=None, help="male | female (omit if unknown).")
@click.option("--site", default=None, help="Anatomical site, e.g. back, face, lower extremity (omit if unknown).")
@click.option("--method", default="gradcam", show_default=True, help="gradcam | layercam")
@tta_option
@calibration_option
@click.option("--refer-at", default="0.90", show_default=True,
              help="The target accuracy whose validation threshold decides 'refer to a clinician'.")
@precision_option
@click.option("--out", default=None, help="Write the mask, segmented image, CAM and prediction.json here.")
@friendly_errors
def predict_cmd(out, **values):
    """Segment, classify and explain one dermoscopic image; prints the class probabilities, highest first."""
    from skinkeras.config import PredictConfig
    from skinkeras.explain.predict import predict

    report = predict(PredictConfig(out=out, **values))
    click.echo(report["calibration"])
    for name, prob in report["probabilities"].items():
        click.echo(f"{name:>8s} {prob:.4f}")
    referral = report["referral"]
    if referral["refer"]:
        click.echo(f"refer to a clinician: confidence {referral['confidence']:.4f} is below the threshold "
                   f"{referral['threshold']:.4f} ({referral['source']})")
    elif referral["threshold"] is None:
        click.echo(f"no referral threshold: {referral['source']}")
    else:
        click.echo(f"confidence {referral['confidence']:.4f} >= threshold {referral['threshold']:.4f} ({referral['source']})")
    if not report["metadata_available"]:
        click.echo("(no metadata given: the metadata branch was masked out)")
    if out:
        click.echo(f"Results: {out}")


@cli.command("export")
@click.option("--model", "model", type=click.Path(dir_okay=False), required=True,
              help="RUN/best.keras of seg-train or cls-train.")
@click.option("--format", "format", required=True, help="onnx | tf_saved_model | litert | torch")
@click.option("--out", required=True, help="Folder for the artifact and its model.json.")
@click.option("--samples", default=4, show_default=True, help="Inputs of the parity check.")
@click.option("--tolerance", default=1e-4, show_default=True, help="Largest output difference that passes.")
@click.option("--images", default=None, type=click.Path(file_okay=False),
              help="Images for the parity check (default: generated ones).")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated parity inputs.")
@friendly_errors
def export_cmd(**values):
    """Export a trained model (ONNX, TF SavedModel, LiteRT, torch.export) with its contract in model.json and a
    parity check of the artifact, run by its own runtime, against the Keras model."""
    from skinkeras.config import ExportConfig
    from skinkeras.exporting import ExportError, export
    from skinkeras.exporting.runtimes import RuntimeUnavailable

    try:
        export(ExportConfig(**values), echo=click.echo)
    except (ExportError, RuntimeUnavailable) as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("serve")
@click.option("--seg-model", required=True, type=click.Path(),
              help="Segmentation .keras (or its `export --format onnx` folder with --runtime onnx).")
@click.option("--cls-model", required=True, type=click.Path(),
              help="RUN/best.keras of cls-train (or its `export --format onnx` folder with --runtime onnx).")
@click.option("--runtime", default="keras", show_default=True,
              help="keras (with Grad-CAM) | onnx (onnxruntime on exported folders; no Grad-CAM).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback only by default).")
@click.option("--port", default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--token", default=None, help="Bearer token every API route requires (or set SKINKERAS_TOKEN).")
@click.option("--insecure", is_flag=True, help="Allow a non-local --host without a token.")
@click.option("--max-upload-mb", default=20.0, show_default=True, help="Largest accepted upload.")
@click.option("--max-pixels", default=40_000_000, show_default=True,
              help="Largest accepted image (width x height); more is refused as a decompression bomb.")
@click.option("--keep-uploads", default=None, type=click.Path(file_okay=False),
              help="Write each uploaded image here (default: uploads stay in memory).")
@click.option("--refer-at", default="0.90", show_default=True,
              help="The target accuracy whose validation threshold decides 'refer to a clinician'.")
@click.option("--method", default="gradcam", show_default=True, help="gradcam | layercam")
@click.option("--workers", default=1, show_default=True,
              help="Requests computed at once (Keras runtime: always one at a time).")
@friendly_errors
def serve_cmd(**values):
    """A local web page and JSON API: drop a dermoscopic image, see the mask, the class probabilities, the
    Grad-CAM of each branch and the referral flag. Ctrl-C stops it."""
    from skinkeras.config import ServeConfig
    from skinkeras.exporting.runtimes import RuntimeUnavailable
    from skinkeras.serving import serve

    try:
        serve(ServeConfig(**values), echo=click.echo)
    except (RuntimeUnavailable, ImportError) as exc:  # --runtime onnx without onnxruntime, or no serve extra
        raise click.ClickException(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__) from None


@cli.command("report")
@click.argument("folders", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", default="report.html", show_default=True, help="The HTML file to write.")
@click.option("--title", default=None, help="Page title (default: the run names).")
@click.option("--screenshot", default=None, type=click.Path(dir_okay=False),
              help="Also render the page in headless Chromium and save a full-page PNG here.")
@friendly_errors
def report_cmd(folders, out, title, screenshot):
    """One self-contained HTML report of run folders, side by side: training runs with their seg-eval / cls-eval
    folders, gradcam folders (Figure 7, CAM measures) and bench folders."""
    from skinkeras.report.html import write_report

    path = write_report(folders, out, title)
    click.echo(f"Report: {os.path.abspath(path)}")
    if screenshot:
        from skinkeras.report.browser import check_page

        seen = check_page(path, screenshot)
        click.echo(f"Screenshot: {os.path.abspath(screenshot)} ({len(seen.images)} images, "
                   f"{len(seen.broken_images)} broken, {len(seen.console_errors)} console errors)")


@cli.command("demo")
@click.option("--out", default="demo", show_default=True, help="Folder for the data and all runs.")
@click.option("--n", default=720, show_default=True, help="Synthetic HAM10000 images (the classification set).")
@click.option("--seg-n", default=160, show_default=True, help="Synthetic ISIC 2018 Task 1 training pairs.")
@click.option("--epochs", default=5, show_default=True, help="Segmentation epochs.")
@click.option("--image-size", default=64, show_default=True, help="Segmentation input size.")
@click.option("--encoder", default="efficientnetb0", show_default=True)
@click.option("--cls-encoder", default="mobilenetv2", show_default=True, help="Both TDBN branches and the baseline.")
@click.option("--cls-image-size", default=64, show_default=True)
@click.option("--cls-epochs", default=10, show_default=True)
@friendly_errors
def demo_cmd(out, **settings):
    """The whole pipeline on a synthetic set with small settings: segmentation, classification, Grad-CAM, predict,
    and an HTML report of it all."""
    from skinkeras.demo import run_demo

    run_demo(out, echo=click.echo, **settings)


if __name__ == "__main__":
    sys.exit(cli())
