"""The embedded main job on synthetic data, with small settings.

make-synthetic -> seg-train -> seg-eval -> segment -> cls-train (TDBN and the
original-only baseline) -> cls-eval -> gradcam -> predict -> report.
"""

import os
import time

from skinkeras import runs
from skinkeras.classification.evaluate import cls_eval
from skinkeras.classification.train import train_classification
from skinkeras.config import ClsTrainConfig, SegTrainConfig
from skinkeras.data.isic2018 import OFFICIAL_FOLDERS
from skinkeras.data.segdir import SegDir
from skinkeras.data.synthetic import make_synthetic
from skinkeras.explain.cam_report import gradcam_report
from skinkeras.explain.predict import predict_image
from skinkeras.segmentation.evaluate import seg_eval_model
from skinkeras.segmentation.segment import segment_folder
from skinkeras.segmentation.train import train_segmentation

STEPS = 9


def _done(output, *inputs):
    """Whether `output` exists and is newer than every input: a re-run keeps such a step's results."""
    return os.path.exists(output) and all(os.path.getmtime(output) >= os.path.getmtime(i) for i in inputs)


def _f(value):
    return "n/a" if value is None else f"{value:.3f}"


def _test_image(run_dir, data_dir):
    """The first held-out image of a classification run, with its true class and clinical metadata."""
    import pandas as pd

    from skinkeras.data.ham10000 import METADATA_CSV

    split = runs.read_csv(os.path.join(run_dir, runs.SPLIT_CSV), columns=("image_id", "subset", "image_path", "dx"))
    row = split[split.subset == "test"].sort_values("image_id").iloc[0]
    meta = pd.read_csv(os.path.join(data_dir, METADATA_CSV)).set_index("image_id").loc[row.image_id]
    age = None if pd.isna(meta.age) else float(meta.age)
    sex = meta.sex if meta.sex in ("male", "female") else None
    site = None if meta.localization == "unknown" else meta.localization
    return row.image_path, row.dx, age, sex, site


def run_demo(out, n=720, seg_n=160, epochs=5, image_size=64, encoder="efficientnetb0", cls_encoder="mobilenetv2",
             cls_image_size=64, cls_epochs=10, echo=print):
    """Runs the whole pipeline on a generated dataset, writes demo/report.html and prints where everything is.

    The same stage functions a user runs on real data, on a synthetic set large
    enough for the numbers to mean something (about 100 held-out
    classification images at the defaults). Trained from scratch on 505
    images, the classifiers get a narrower FFN (256) and one 128-unit head
    block instead of the paper's 2048 and (512, 128). Re-running reuses the
    data, resumes the training runs and keeps every evaluation newer than the
    model it scored, so an interrupted demo picks up where it stopped.

    Args:
        out: folder for data and runs.
        n: synthetic HAM10000 images (the classification set).
        seg_n: synthetic ISIC 2018 Task 1 training pairs (plus max(4, seg_n // 10) held-out pairs).
        epochs: segmentation training epochs.
        image_size: segmentation training size (multiple of 32).
        encoder: segmentation encoder (EfficientNetB3 is the paper's; smaller is faster on a CPU).
        cls_encoder: classification encoder of both branches (DenseNet201 is the paper's).
        cls_image_size: classification input size.
        cls_epochs: classification training epochs.
        echo: print function.
    """
    from skinkeras.models.encoders import encoder_spec
    from skinkeras.report.html import write_report

    started = time.time()
    data = os.path.join(out, "data")
    folders = {name: os.path.join(data, name) for name in ("isic2018", "ham10000")}
    if not all(os.path.isdir(f) for f in folders.values()):
        echo(f"[1/{STEPS}] make-synthetic: {seg_n} ISIC 2018 pairs and {n} HAM10000 images -> {data}")
        make_synthetic(data, n=seg_n, seed=0, datasets=("isic2018",))
        make_synthetic(data, n=n, seed=0, datasets=("ham10000",))
    else:
        echo(f"[1/{STEPS}] synthetic data already in {data}")

    run_dir = os.path.join(out, "seg-train")
    echo(f"[2/{STEPS}] seg-train deep_unet/{encoder} at {image_size}px, {epochs} epochs, weights none -> {run_dir}")
    cfg = SegTrainConfig(data_dir=folders["isic2018"], encoder=encoder, weights="none", image_size=image_size,
                         epochs=epochs, batch_size=8, learning_rate=1e-3, out=run_dir)
    train_segmentation(cfg, resume=os.path.isfile(os.path.join(run_dir, "config.json")))

    eval_dir = os.path.join(out, "seg-eval")
    echo(f"[3/{STEPS}] seg-eval on the held-out {OFFICIAL_FOLDERS['val'][0]} images -> {eval_dir}")
    seg_model = os.path.join(run_dir, "best.keras")
    if _done(os.path.join(eval_dir, "metrics.json"), seg_model):
        metrics = runs.read_json(os.path.join(eval_dir, "metrics.json"))
    else:
        metrics = seg_eval_model(seg_model, eval_dir, data_dir=folders["isic2018"], subset="val")

    seg_dir = os.path.join(out, "segdir")
    echo(f"[4/{STEPS}] segment the HAM10000 images -> {seg_dir}")
    ham = folders["ham10000"]
    for part in sorted(os.listdir(ham)):
        if part.startswith("HAM10000_images"):
            segment_folder(os.path.join(run_dir, "best.keras"), os.path.join(ham, part), seg_dir)

    cls_runs = {}
    for variant in ("tdbn", "original_only"):
        cls_runs[variant] = os.path.join(out, f"cls-{variant}")
        echo(f"[5/{STEPS}] cls-train {variant}/{cls_encoder} at {cls_image_size}px, {cls_epochs} epochs, weights none "
             f"-> {cls_runs[variant]}")
        cls_cfg = ClsTrainConfig(dataset="ham10000", data_dir=ham, seg_dir=seg_dir, arch=variant, encoder=cls_encoder,
                                 weights="none", image_size=cls_image_size, epochs=cls_epochs, batch_size=16,
                                 learning_rate=2e-3, ffn_dim=256, head_units=[128], out=cls_runs[variant])
        train_classification(cls_cfg, resume=os.path.isfile(os.path.join(cls_runs[variant], "config.json")))
    models = {variant: os.path.join(folder, "best.keras") for variant, folder in cls_runs.items()}

    cls_metrics, cls_eval_dirs = {}, {}
    for variant in cls_runs:
        cls_eval_dirs[variant] = os.path.join(out, f"cls-eval-{variant}")
        echo(f"[6/{STEPS}] cls-eval of {variant} on its held-out test split -> {cls_eval_dirs[variant]}")
        done = os.path.join(cls_eval_dirs[variant], "metrics.json")
        cls_metrics[variant] = (runs.read_json(done) if _done(done, models[variant])
                                else cls_eval(models[variant], cls_eval_dirs[variant]))

    # At 64 px the last block is a 2x2 map, too coarse to point anywhere: the CAMs are taken at the encoder's
    # stride-8 map (8x8), with Grad-CAM (the paper's method) and LayerCAM (made for such shallower layers).
    cam_layer = encoder_spec(cls_encoder).skips[2] if cls_image_size < 128 else None
    cam_dirs, cam_metrics = {}, {}
    for method in ("gradcam", "layercam"):
        cam_dirs[method] = os.path.join(out, method)
        echo(f"[7/{STEPS}] gradcam --method {method} of the TDBN and the original-only baseline on 32 test images"
             f"{f' at {cam_layer}' if cam_layer else ''} -> {cam_dirs[method]}")
        done = os.path.join(cam_dirs[method], "cam_metrics.json")
        cam_metrics[method] = (runs.read_json(done) if _done(done, *models.values()) else
                               gradcam_report(models["tdbn"], cam_dirs[method], models["original_only"], n=32,
                                              layer=cam_layer, method=method, progress=False))

    predict_dir = os.path.join(out, "predict")
    image, truth, age, sex, site = _test_image(cls_runs["tdbn"], ham)
    echo(f"[8/{STEPS}] predict {os.path.basename(image)} (a test image; age {age}, {sex}, {site}) -> {predict_dir}")
    done = os.path.join(predict_dir, "prediction.json")
    prediction = (runs.read_json(done) if _done(done, seg_model, models["tdbn"]) else
                  predict_image(image, seg_model, models["tdbn"], age=age, sex=sex, site=site, out=predict_dir))

    report = os.path.join(out, "report.html")
    echo(f"[9/{STEPS}] report -> {report}")
    write_report([run_dir, eval_dir, *cls_runs.values(), *cls_eval_dirs.values(), *cam_dirs.values()], report,
                 title="skinkeras demo (synthetic data)")

    pointing = {(method, label, branch): b["pointing_game"] for method, metrics_ in cam_metrics.items()
                for label, m in metrics_["models"].items() for branch, b in m["branches"].items()}
    echo("")
    echo(f"Demo finished in {(time.time() - started) / 60:.1f} min.")
    echo(f"  data:             {data}")
    echo(f"  segmentation:     {run_dir}; held-out evaluation {eval_dir}")
    echo(f"    dice={metrics['dice']:.3f} jaccard={metrics['jaccard']:.3f} "
         f"threshold_jaccard={metrics['threshold_jaccard']:.3f} on {metrics['images']} held-out images")
    echo(f"  segmented images: {SegDir(seg_dir).segmented_folder}")
    for variant, m in cls_metrics.items():
        echo(f"  {variant + ':':17s} {cls_runs[variant]}; test split {cls_eval_dirs[variant]}")
        echo(f"    balanced_accuracy={_f(m['balanced_accuracy'])} accuracy={_f(m['accuracy'])} "
             f"auc_macro={_f(m['auc_macro'])} on {m['images']} test images (chance: 1/7 = 0.143)")
    for method, metrics_ in cam_metrics.items():
        echo(f"  {method + ':':17s} {cam_dirs[method]}  (figure7.png, overlays/, cam_metrics.json)")
        for label, m in metrics_["models"].items():
            for branch, b in m["branches"].items():
                if b["pointing_game"] is None:
                    echo(f"    {label} ({m['name']}) {branch}: not measured ({b['degenerate_maps']} degenerate maps; "
                         "see the note in cam_metrics.json)")
                else:
                    echo(f"    {label} ({m['name']}) {branch}: pointing game {_f(b['pointing_game'])}, CAM mass in "
                         f"lesion {_f(b['mass_in_lesion'])} on {b['images_measured']} images")
    top = prediction["predicted"]
    echo(f"  predict:          {predict_dir}: {top} {prediction['probabilities'][top]:.3f} (true class: {truth})")
    echo(f"  report:           {os.path.abspath(report)}")
    return {"run_dir": run_dir, "eval_dir": eval_dir, "seg_dir": seg_dir, "metrics": metrics, "cls_runs": cls_runs,
            "cls_metrics": cls_metrics, "cam_metrics": cam_metrics, "pointing": pointing,
            "prediction": prediction, "truth": truth, "report": report}
