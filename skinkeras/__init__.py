"""skinkeras: explainable skin-lesion segmentation and classification in Keras 3 (JAX, TensorFlow, PyTorch).

Importing the package registers every custom layer and model class, so
`keras.saving.load_model("RUN/best.keras")` works after `import skinkeras`.
The builders, the stage functions (each taking a config) and `load_model`
are exposed here; the CLI (`python cli.py ...`) calls the same functions.

    from skinkeras import SegTrainConfig, load_model, train_segmentation

    run_dir = train_segmentation(SegTrainConfig(data_dir="ISIC2018", weights="none", image_size=128, epochs=5))
    model = load_model(f"{run_dir}/best.keras")

Deployment: `export("RUN/best.keras", "onnx", "OUT")` writes an artifact with its model.json and parity check;
`serve(seg_model, cls_model)` runs the local page and JSON API.

Trust: `calibrate(run_dir)` fits a run's temperature and referral thresholds on its validation split;
`skinkeras.trust` holds the calibration, referral and subgroup metrics as functions of arrays.
"""

__version__ = "0.1.0"

# Before anything imports Keras (and, through it, TensorFlow): see backend_config.
from skinkeras.backend_config import enable_jax_compilation_cache, quiet_tensorflow_startup

quiet_tensorflow_startup()
enable_jax_compilation_cache()

from skinkeras import layers  # noqa: F401  (registers the custom layers)
from skinkeras import trust  # noqa: F401  (calibration, referral and subgroup metrics on arrays)
from skinkeras.classification.calibrate import calibrate
from skinkeras.classification.evaluate import evaluate_classification
from skinkeras.classification.train import train_classification
from skinkeras.config import (
    CalibrateConfig,
    ClsEvalConfig,
    ClsTrainConfig,
    ExplainConfig,
    ExportConfig,
    PredictConfig,
    ReproduceConfig,
    SegEvalConfig,
    SegmentConfig,
    SegTrainConfig,
    ServeConfig,
)
from skinkeras.data.cache import ensure_cache, open_cache, prepare_cache
from skinkeras.data.synthetic import make_synthetic
from skinkeras.explain.cam_report import gradcam
from skinkeras.explain.gradcam import grad_cam
from skinkeras.explain.predict import predict
from skinkeras.exporting import export
from skinkeras.inference import load_cls_run, load_model
from skinkeras.models.cls_baselines import build_cls_baseline
from skinkeras.models.contract import Contract, ExplanationTarget, SkinModel, contract_of
from skinkeras.models.deep_unet import build_deep_unet
from skinkeras.models.layout import data_format_scope
from skinkeras.models.registry import architectures, build_model, get_architecture
from skinkeras.models.seg_baselines import build_deeplabv3plus, build_unet, build_unetpp
from skinkeras.models.tdbn import build_tdbn
from skinkeras.precision import precision_scope, with_precision
from skinkeras.reproduce import reproduce
from skinkeras.segmentation.evaluate import evaluate_segmentation
from skinkeras.segmentation.segment import segment
from skinkeras.segmentation.train import train_segmentation
from skinkeras.serving.server import serve

__all__ = [
    "CalibrateConfig",
    "ClsEvalConfig",
    "ClsTrainConfig",
    "Contract",
    "ExplainConfig",
    "ExplanationTarget",
    "ExportConfig",
    "PredictConfig",
    "ReproduceConfig",
    "SegEvalConfig",
    "SegTrainConfig",
    "SegmentConfig",
    "ServeConfig",
    "SkinModel",
    "architectures",
    "build_cls_baseline",
    "build_deep_unet",
    "build_deeplabv3plus",
    "build_model",
    "build_tdbn",
    "build_unet",
    "build_unetpp",
    "calibrate",
    "contract_of",
    "data_format_scope",
    "ensure_cache",
    "evaluate_classification",
    "evaluate_segmentation",
    "export",
    "get_architecture",
    "grad_cam",
    "gradcam",
    "load_cls_run",
    "load_model",
    "make_synthetic",
    "open_cache",
    "precision_scope",
    "predict",
    "prepare_cache",
    "reproduce",
    "segment",
    "serve",
    "train_classification",
    "train_segmentation",
    "trust",
    "with_precision",
]
