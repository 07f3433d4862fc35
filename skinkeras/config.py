"""Run configurations: paper defaults, overridden by an experiments/*.toml file, then by CLI options.

Every stage function takes one of these dataclasses. The two training
configs share `TrainConfig`; values are type-checked when a config is made,
so a typo in a TOML file stops the run before any data is read.
"""

import dataclasses
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field

from skinkeras import runs


def _check_value(name, value, annotation):
    """Raises a one-line ValueError when `value` does not fit the field's annotation."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in allowed:
            return
        raise ValueError(f"{name} must be given (got None)")
    for kind in allowed:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if kind in (str, bool, list, dict) and isinstance(value, kind):
            return
    names = " or ".join("none" if k is type(None) else k.__name__ for k in allowed)
    raise ValueError(f"{name} must be {names} (got {value!r})")


@dataclass
class BaseConfig:
    """Shared behaviour of every config: type checks, JSON form, upgrades of older files."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_value(f.name, getattr(self, f.name), hints[f.name])
        self.check()

    def check(self):
        """Value checks beyond types (ranges); subclasses extend it."""

    @classmethod
    def upgrade(cls, values):
        """Maps the keys of a config.json written by an earlier version to the current fields.

        Args:
            values: dict read from JSON.
        """
        return values

    @classmethod
    def from_dict(cls, values):
        """Builds a config from a dict, naming unknown keys and listing the valid ones.

        Args:
            values: field name -> value.
        """
        values = cls.upgrade(dict(values))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown keys {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**values)


def _option(name):
    return f"--{name.replace('_', '-')}"


def _positive(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"{_option(name)} must be at least 1 (got {value})")


def _within(cfg, name, low, high, low_open=False, high_open=False):
    value = getattr(cfg, name)
    if value is None:
        return
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{_option(name)} must be in {bounds} (got {value})")


def _one_of(cfg, name, valid):
    value = getattr(cfg, name)
    if value not in valid:
        raise ValueError(f"Unknown {_option(name)} {value!r}; valid: {', '.join(valid)}")


def _devices(cfg):
    from skinkeras.distribute import parse_devices

    cfg.devices = str(parse_devices(cfg.devices))


def _trust(cfg):
    """Checks the test-time augmentation and the referral targets (one line each)."""
    from skinkeras.data.pipeline import TTA_VIEWS
    from skinkeras.trust.referral import parse_targets

    _one_of(cfg, "tta", tuple(TTA_VIEWS))
    parse_targets(cfg.refer_at)


def _precision(cfg):
    from skinkeras.precision import PRECISIONS

    if cfg.precision is not None and cfg.precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)} (got {cfg.precision!r})")
    from skinkeras.backend_config import precision_unsupported

    reason = precision_unsupported(cfg.precision)
    if reason:
        raise ValueError(reason)


def _length(cfg, name, n):
    value = getattr(cfg, name)
    if len(value) != n:
        raise ValueError(f"{name} needs {n} values (got {value})")


@dataclass
class TrainConfig(BaseConfig):
    """Settings shared by both training stages.

    Args:
        data_dir: dataset folder in its official layout.
        arch: registry name of the model (`skinkeras.models.registry`).
        encoder: encoder table name.
        weights: imagenet | none | PATH of encoder weights.
        image_size: square input size.
        epochs: training epochs.
        batch_size: batch size.
        learning_rate: Adam learning rate (paper: 1e-4).
        lr_step_epochs: multiply the learning rate by lr_factor every this many epochs.
        lr_factor: learning-rate decay factor per step (paper: 0.5).
        flip_prob: horizontal flip probability (paper 4.2: 0.5).
        max_rotation: rotation range in degrees (paper 4.2: 15).
        bn_momentum: BatchNorm moving-average momentum (0.9 = PyTorch's default, which the paper used).
        seed: seed of the split, shuffling, augmentation and initialisation.
        limit: use only N items of a seeded order.
        out: run folder.
        devices: data-parallel devices: auto (every accelerator; one on a CPU-only machine) or N.
        cache: input cache folder written by `prepare` (read instead of decoding the image files).
        precision: fp32 | bf16 | fp16 compute precision (Keras mixed policies; outputs, losses and metrics
            stay float32; fp16 adds dynamic loss scaling).
        jit_compile: Keras' `jit_compile` of the train step: None = "auto" (XLA on JAX / TensorFlow, eager on
            torch), True (torch: `torch.compile`), False (TensorFlow: no XLA).
        data_format: the layout the classifiers' CNN encoders compute in: channels_last, channels_first
            (PyTorch's native layout: no transposes around each convolution on torch), or None for Keras'
            `image_data_format()`; inputs and outputs stay channels-last (`skinkeras.models.layout`).
    """

    task: typing.ClassVar[str] = ""

    data_dir: str | None = None
    arch: str = ""
    encoder: str = ""
    weights: str = "imagenet"
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-4
    lr_step_epochs: int = 4
    lr_factor: float = 0.5
    flip_prob: float = 0.5
    max_rotation: float = 15.0
    bn_momentum: float = 0.9
    seed: int = 0
    limit: int | None = None
    out: str | None = None
    devices: str | int = "auto"
    cache: str | None = None
    precision: str = "fp32"
    jit_compile: bool | None = None
    data_format: str | None = None

    def check(self):
        _devices(self)
        _precision(self)
        if self.data_format is not None:
            from skinkeras.models.layout import FORMATS

            if self.data_format not in FORMATS:
                raise ValueError(f"--data-format must be one of {', '.join(FORMATS)} (got {self.data_format!r})")
            from skinkeras.backend_config import data_format_unsupported

            reason = data_format_unsupported(self.data_format)
            if reason:
                raise ValueError(reason)
        _positive(self, "epochs", "batch_size", "limit", "lr_step_epochs")
        if self.image_size < 32:
            raise ValueError(f"--image-size must be at least 32 px (got {self.image_size})")
        _within(self, "learning_rate", 0, 1, low_open=True)
        _within(self, "lr_factor", 0, 1, low_open=True)
        _within(self, "flip_prob", 0, 1)
        _within(self, "max_rotation", 0, 180)
        _within(self, "bn_momentum", 0, 1, high_open=True)
        from skinkeras.models.encoders import normalize_weights
        from skinkeras.models.registry import get_architecture

        get_architecture(self.arch, self.task)
        normalize_weights(self.weights)  # a weights PATH that does not exist fails now, not after loading data


@dataclass
class SegTrainConfig(TrainConfig):
    """Segmentation training settings; defaults follow paper 4.1.2 where it gives them.

    Args (beside `TrainConfig`'s):
        images: plain image folder (instead of data_dir).
        masks: plain mask folder (with images).
        val_fraction: validation share (paper: 0.2).
        aspp_rates: Deep-UNet ASPP dilation rates (paper: "e.g. 1, 2, 3").
        aspp_filters: ASPP channels (not in the paper).
        decoder_filters: decoder channels per level, deepest first (not in the paper).
        aux_weights: deep-supervision loss weights (paper Eq. 4: 0.2, 0.1).
    """

    task: typing.ClassVar[str] = "segmentation"

    arch: str = "deep_unet"
    encoder: str = "efficientnetb3"
    epochs: int = 12
    images: str | None = None
    masks: str | None = None
    val_fraction: float = 0.2
    aspp_rates: list = field(default_factory=lambda: [1, 2, 3])
    aspp_filters: int = 256
    decoder_filters: list = field(default_factory=lambda: [256, 128, 64, 32, 16])
    aux_weights: list = field(default_factory=lambda: [0.2, 0.1])

    def check(self):
        super().check()
        from skinkeras.models.encoders import ENCODERS, encoder_spec

        if self.image_size % 32:
            raise ValueError(f"--image-size must be a multiple of 32 for segmentation (got {self.image_size}); "
                             "e.g. 128, 224, 256")
        if not encoder_spec(self.encoder).segmentation:
            valid = ", ".join(name for name, spec in ENCODERS.items() if spec.segmentation)
            raise ValueError(f"Encoder {self.encoder!r} has no stride-aligned skips for segmentation; valid: {valid}")
        _within(self, "val_fraction", 0, 1, low_open=True, high_open=True)
        _length(self, "decoder_filters", 5)
        _length(self, "aux_weights", 2)


@dataclass
class ClsTrainConfig(TrainConfig):
    """Classification training settings; defaults follow paper 4.2 and 6.1 where it gives them.

    Args (beside `TrainConfig`'s):
        dataset: ham10000 | isic2019.
        images: image folder(s) instead of the official ones.
        seg_dir: folder written by `segment` (its segmented images feed the segmented branch).
        arch: a TDBN variant of Table 3 (tdbn, tdbn_no_meta, original_only, segmented_only) or a Table 2
            baseline (densenet201, resnet50, xception, mobilenetv2, efficientnetb3, vit).
        split: lesion (grouped by lesion_id, default) | image (the paper-style random image split).
        fractions: train / validation / test shares.
        weight_decay: Adam weight decay (paper: 1e-4; Keras applies it decoupled, as AdamW).
        balance: cap majority / expand minority classes of the training split (paper 4.2).
        balance_cap: largest class size per epoch (default: twice the mean class size).
        balance_floor: size minority classes are expanded to (default: half the mean class size).
        metadata_encoder: mlp (Eq. 7) | transformer.
        num_heads: cross-attention heads (not in the paper).
        key_dim: cross-attention key size per head (None: channels // heads).
        ffn_dim: hidden width of the cross-attention FFN.
        attention_dropout: dropout inside the cross-attention block and the metadata transformer.
        dropout: dropout of the projection and head blocks (not in the paper).
        projection_dim: width both modalities are projected to (None: the encoder's channels).
        head_units: hidden widths of the classification head (paper 5.6: 512, 128).
        tabular_units: widths of the metadata MLP (Eq. 7).
        metadata_dim: token width of the metadata transformer.
        metadata_heads: heads of the metadata transformer.
        metadata_layers: blocks of the metadata transformer.
        vit_patch_size: ViT baseline patch side (ViT-B/16: 16).
        vit_dim: ViT token width (768).
        vit_depth: ViT blocks (12).
        vit_heads: ViT heads (12).
        vit_mlp_dim: ViT MLP width (3072).
        vit_dropout: ViT dropout.
    """

    task: typing.ClassVar[str] = "classification"

    arch: str = "tdbn"
    encoder: str = "densenet201"
    lr_step_epochs: int = 3
    dataset: str = "ham10000"
    images: list | None = None
    seg_dir: str | None = None
    split: str = "lesion"
    fractions: list = field(default_factory=lambda: [0.7, 0.15, 0.15])
    weight_decay: float = 1e-4
    balance: bool = True
    balance_cap: int | None = None
    balance_floor: int | None = None
    metadata_encoder: str = "mlp"
    num_heads: int = 8
    key_dim: int | None = None
    ffn_dim: int = 2048
    attention_dropout: float = 0.1
    dropout: float = 0.3
    projection_dim: int | None = None
    head_units: list = field(default_factory=lambda: [512, 128])
    tabular_units: list = field(default_factory=lambda: [128, 256])
    metadata_dim: int = 64
    metadata_heads: int = 4
    metadata_layers: int = 1
    vit_patch_size: int = 16
    vit_dim: int = 768
    vit_depth: int = 12
    vit_heads: int = 12
    vit_mlp_dim: int = 3072
    vit_dropout: float = 0.1

    def check(self):
        super().check()
        from skinkeras.data.sets import dataset_classes
        from skinkeras.models.encoders import encoder_spec

        dataset_classes(self.dataset)
        _one_of(self, "split", ("lesion", "image"))
        _one_of(self, "metadata_encoder", ("mlp", "transformer"))
        encoder_spec(self.encoder)
        if len(self.fractions) not in (2, 3) or min(self.fractions) <= 0 or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"fractions must be 2 or 3 positive shares summing to 1 (got {self.fractions})")
        _within(self, "dropout", 0, 1, high_open=True)
        _within(self, "attention_dropout", 0, 1, high_open=True)
        if self.arch == "vit" and self.image_size % self.vit_patch_size:
            raise ValueError(f"--image-size {self.image_size} is not a multiple of the ViT patch size "
                             f"{self.vit_patch_size}")
        if self.arch == "xception" and self.image_size < 71:
            raise ValueError(f"Xception needs --image-size of at least 71 (got {self.image_size})")

    @classmethod
    def upgrade(cls, values):
        # Before the registry, a run named a TDBN variant under "variant" and a baseline under "arch".
        if "variant" in values:
            variant = values.pop("variant")
            values["arch"] = values.get("arch") or variant
        return values


@dataclass
class SegEvalConfig(BaseConfig):
    """`seg-eval`: predict and score a labelled set, or score existing mask folders.

    Args:
        out: output folder.
        model: `.keras` segmentation model (RUN/best.keras).
        data_dir: ISIC 2018 Task 1 folder (official layout).
        images: plain image folder (instead of data_dir).
        masks: plain mask folder.
        subset: official subset (train, val, test) with data_dir.
        limit: evaluate N pairs of a seeded order.
        seed: seed of that order.
        batch_size: prediction batch size.
        truth_dir: score existing masks: ground truth folder (no model).
        pred_dir: score existing masks: prediction folder.
        devices: data-parallel devices for prediction (auto or N).
        dataset: layout of data_dir: isic2018 | ph2 | isic2017.
        bootstrap: bootstrap resamples (by image) for the 95% intervals; 0 for none.
        cache: input cache written by `prepare` for this set: scores at the cache's resolution, decoding no file.
        precision: compute precision of prediction, fp32 | bf16 | fp16 (None: the model's own).
    """

    out: str
    model: str | None = None
    data_dir: str | None = None
    images: str | None = None
    masks: str | None = None
    subset: str = "train"
    limit: int | None = None
    seed: int = 0
    batch_size: int = 8
    truth_dir: str | None = None
    pred_dir: str | None = None
    devices: str | int = "auto"
    dataset: str = "isic2018"
    bootstrap: int = 1000
    cache: str | None = None
    precision: str | None = None

    def check(self):
        from skinkeras.data.sets import SEGMENTATION_DATASETS

        _devices(self)
        _precision(self)
        _positive(self, "batch_size", "limit")
        _within(self, "bootstrap", 0, 1_000_000)
        _one_of(self, "subset", ("train", "val", "test"))
        _one_of(self, "dataset", SEGMENTATION_DATASETS)
        if self.dataset != "isic2018" and not self.data_dir and not self.truth_dir:
            raise ValueError(f"--dataset {self.dataset} needs --data-dir DIR in its official layout")
        if self.truth_dir or self.pred_dir:
            if not (self.truth_dir and self.pred_dir) or self.model:
                raise ValueError("Scoring folders needs both --truth-dir and --pred-dir (and no --model)")
        elif not self.model:
            raise ValueError("Give --model RUN/best.keras with --data-dir or --images/--masks, "
                             "or --truth-dir/--pred-dir")


@dataclass
class SegmentConfig(BaseConfig):
    """`segment`: masks and segmented images (original x mask) for whole image folders.

    Args:
        model: `.keras` segmentation model.
        images: image folders.
        out: output folder (SEGDIR).
        batch_size: prediction batch size.
        devices: data-parallel devices for prediction (auto or N).
        dataset: also segment every image of a set in its official layout: ph2 | isic2017 (with data_dir),
            whose images sit in nested folders.
        data_dir: that set's folder.
        subset: its official subset (isic2017: train, val, test).
        precision: compute precision of prediction, fp32 | bf16 | fp16 (None: the model's own).
    """

    model: str
    images: list
    out: str
    batch_size: int = 8
    devices: str | int = "auto"
    dataset: str | None = None
    data_dir: str | None = None
    subset: str = "test"
    precision: str | None = None

    def check(self):
        from skinkeras.data.sets import SEGMENTATION_DATASETS

        _devices(self)
        _precision(self)
        _positive(self, "batch_size")
        _one_of(self, "subset", ("train", "val", "test"))
        if self.dataset is not None:
            _one_of(self, "dataset", SEGMENTATION_DATASETS)
            if not self.data_dir:
                raise ValueError(f"--dataset {self.dataset} needs --data-dir DIR in its official layout")
        if not self.images and not self.dataset:
            raise ValueError("Give --images DIR, or --dataset ph2|isic2017 --data-dir DIR")


@dataclass
class ClsEvalConfig(BaseConfig):
    """`cls-eval`: scores of a classifier on its run's split or another labelled set.

    Args:
        model: RUN/best.keras of `cls-train`.
        out: output folder.
        subset: split subset (train, val, test) when no other data is given.
        data_dir: evaluate all images of another dataset folder instead.
        images: image folder(s) of that dataset.
        seg_dir: segmented images of that dataset.
        batch_size: prediction batch size.
        devices: data-parallel devices for prediction (auto or N).
        dataset: None (the run's dataset) or an external set, ph2 | isic2017, read from data_dir and scored
            on the classes it has.
        bootstrap: bootstrap resamples (by lesion) for the 95% intervals; 0 for none.
        seed: bootstrap seed.
        against: another model's cls-eval folder on the same images: adds paired bootstrap differences.
        cache: input cache written by `prepare` (read instead of decoding the image files).
        precision: compute precision of prediction, fp32 | bf16 | fp16 (None: the model's own).
        tta: test-time augmentation, none | flip | flip-rotate (mean of the views' probabilities).
        calibration: apply the run's calibration.json (False: raw probabilities).
        refer_at: target accuracies of the referral operating points, comma-separated.
        min_group: subgroups with fewer images are listed as too small, not scored.
    """

    model: str
    out: str
    subset: str = "test"
    data_dir: str | None = None
    images: list | None = None
    seg_dir: str | None = None
    batch_size: int = 16
    devices: str | int = "auto"
    dataset: str | None = None
    bootstrap: int = 1000
    seed: int = 0
    against: str | None = None
    cache: str | None = None
    precision: str | None = None
    tta: str = "none"
    calibration: bool = True
    refer_at: str = "0.90,0.95"
    min_group: int = 30

    def check(self):
        from skinkeras.data.sets import EXTERNAL_DATASETS

        _devices(self)
        _precision(self)
        _positive(self, "batch_size")
        _trust(self)
        _positive(self, "min_group")
        _within(self, "bootstrap", 0, 1_000_000)
        _one_of(self, "subset", ("train", "val", "test"))
        if self.dataset in EXTERNAL_DATASETS and not self.data_dir:
            raise ValueError(f"--dataset {self.dataset} needs --data-dir DIR in its official layout")


@dataclass
class CalibrateConfig(BaseConfig):
    """`cls-calibrate`: a classifier run's temperature and referral thresholds, fitted on its validation split.

    Args:
        run: a cls-train run folder (or a model file inside it; default its best.keras).
        refer_at: target accuracies of the referral thresholds, comma-separated.
        batch_size: prediction batch size.
        cache: input cache of the run's images (default: the run's own).
        devices: data-parallel devices for prediction (auto or N).
    """

    run: str
    refer_at: str = "0.90,0.95"
    batch_size: int = 16
    cache: str | None = None
    devices: str | int = "auto"

    def check(self):
        from skinkeras.trust.referral import parse_targets

        _devices(self)
        _positive(self, "batch_size")
        parse_targets(self.refer_at)


@dataclass
class ExplainConfig(BaseConfig):
    """`gradcam`: CAMs of a classifier (and a baseline) on a split or a folder, measured against the lesion.

    Args:
        model: RUN/best.keras of `cls-train`.
        out: output folder.
        baseline: another classifier's .keras shown and measured beside it.
        images: an image folder instead of the run's split (no labels, no metadata).
        subset: split subset when no folder is given.
        n: images to explain (a seeded sample); 0 = all.
        layer: target layer (default: the model's explanation targets).
        class_name: explain this class for every image (default: the predicted one).
        masks: lesion-mask folder (ID_segmentation.png) for the measures.
        seg_dir: SEGDIR when it is not the run's.
        method: gradcam | layercam.
        batch_size: images per gradient call.
        seed: seed of the image sample.
        cache: input cache written by `prepare` (read instead of decoding the image files).
    """

    model: str
    out: str
    baseline: str | None = None
    images: str | None = None
    subset: str = "test"
    n: int = 16
    layer: str | None = None
    class_name: str | None = None
    masks: str | None = None
    seg_dir: str | None = None
    method: str = "gradcam"
    batch_size: int = 8
    seed: int = 0
    cache: str | None = None

    def check(self):
        _positive(self, "batch_size")
        if self.n < 0:
            raise ValueError(f"--n must be 0 (all) or more (got {self.n})")
        _one_of(self, "subset", ("train", "val", "test"))
        _one_of(self, "method", ("gradcam", "layercam"))


@dataclass
class PredictConfig(BaseConfig):
    """`predict`: the whole pipeline on one image.

    Args:
        image: the image file.
        seg_model: segmentation `.keras`.
        cls_model: RUN/best.keras of `cls-train`.
        age: years, or None (unknown).
        sex: male | female, or None.
        site: anatomical site, or None.
        out: output folder, or None to write nothing.
        method: gradcam | layercam.
        layer: CAM target layer (default: the model's explanation targets).
        precision: compute precision of the two predictions, fp32 | bf16 | fp16 (None: the models' own);
            Grad-CAM runs on the model as saved, in its float32 gradients.
        tta: test-time augmentation of the probabilities, none | flip | flip-rotate.
        calibration: apply the run's calibration.json (False: raw probabilities).
        refer_at: the target accuracy whose validation threshold decides "refer to a clinician".
    """

    image: str
    seg_model: str
    cls_model: str
    age: float | None = None
    sex: str | None = None
    site: str | None = None
    out: str | None = None
    method: str = "gradcam"
    layer: str | None = None
    precision: str | None = None
    tta: str = "none"
    calibration: bool = True
    refer_at: str = "0.90"

    def check(self):
        from skinkeras.trust.referral import parse_targets

        _precision(self)
        _trust(self)
        if len(parse_targets(self.refer_at)) != 1:
            raise ValueError(f"--refer-at {self.refer_at}: predict takes one target accuracy, e.g. 0.90")
        _one_of(self, "method", ("gradcam", "layercam"))
        _within(self, "age", 0, 120)


@dataclass
class ExportConfig(BaseConfig):
    """`export`: a trained model as a deployable artifact with its contract (model.json) and a parity check.

    Args:
        model: a `.keras` model of this project (RUN/best.keras of seg-train or cls-train).
        format: onnx | tf_saved_model | litert | torch.
        out: output folder (the artifact and model.json).
        samples: inputs of the parity check.
        tolerance: largest absolute difference of the main output between the artifact and Keras that passes.
        images: optional folder of images for the parity check (default: generated ones).
        seed: seed of the generated parity inputs.
    """

    model: str
    format: str
    out: str
    samples: int = 4
    tolerance: float = 1e-4
    images: str | None = None
    seed: int = 0

    def check(self):
        from skinkeras.names import EXPORT_FORMATS

        _one_of(self, "format", EXPORT_FORMATS)
        _positive(self, "samples")
        if not self.tolerance > 0:
            raise ValueError(f"--tolerance must be positive (got {self.tolerance})")


@dataclass
class ServeConfig(BaseConfig):
    """`serve`: one local web application (page and JSON API) for explainable prediction of one image.

    Args:
        seg_model: segmentation `.keras` (runtime keras) or a folder written by `export` (runtime onnx).
        cls_model: RUN/best.keras of cls-train (runtime keras) or a folder written by `export` (runtime onnx).
        runtime: keras (Grad-CAM available) | onnx (onnxruntime; no gradients, so no Grad-CAM).
        host: address to bind (default loopback only).
        port: TCP port (0: any free one).
        token: bearer token every API route requires (None: none; SKINKERAS_TOKEN is read when unset).
        insecure: allow a non-local host without a token.
        max_upload_mb: largest accepted upload.
        max_pixels: largest accepted image (width x height); larger is refused as a decompression bomb.
        keep_uploads: folder to write each uploaded image to (None: uploads stay in memory only).
        refer_at: the target accuracy whose validation threshold decides "refer to a clinician".
        method: gradcam | layercam.
        workers: inference threads (requests beyond them wait their turn).
    """

    seg_model: str
    cls_model: str
    runtime: str = "keras"
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    insecure: bool = False
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000
    keep_uploads: str | None = None
    refer_at: str = "0.90"
    method: str = "gradcam"
    workers: int = 1

    def check(self):
        from skinkeras.trust.referral import parse_targets

        _one_of(self, "runtime", ("keras", "onnx"))
        _one_of(self, "method", ("gradcam", "layercam"))
        _within(self, "port", 0, 65535)
        _positive(self, "workers", "max_pixels")
        if not self.max_upload_mb > 0:
            raise ValueError(f"--max-upload-mb must be positive (got {self.max_upload_mb})")
        if len(parse_targets(self.refer_at)) != 1:
            raise ValueError(f"--refer-at {self.refer_at}: serve takes one target accuracy, e.g. 0.90")


@dataclass
class ReproduceConfig(BaseConfig):
    """`reproduce`: every row of the paper's tables trained, scored and set beside the paper's number.

    A TOML file (`--config`) holds the top-level fields below plus two tables, `[segmentation]` and
    `[classification]`, of `SegTrainConfig` / `ClsTrainConfig` values that every row of that task uses.

    Args:
        tables: any of table1 (segmentation), table2 (baselines), table3 (ablations).
        out: results folder (runs, evaluations, results.md, results.csv).
        dataset: classification set of Tables 2 and 3: ham10000 | isic2019.
        data_dir: its folder in the official layout.
        images: its image folder(s), if not the official ones.
        seg_dir: segmented images of that set already written by `segment` (default: made with the
            Table 1 Deep-UNet, trained here if Table 1 is not asked for).
        seg_data_dir: segmentation training set in the ISIC 2018 Task 1 layout.
        seg_images: plain image folder instead (e.g. HAM10000 images).
        seg_masks: its mask folder.
        seg_eval_dataset: layout of the Table 1 evaluation set: isic2018 | ph2 | isic2017.
        seg_eval_data_dir: the Table 1 evaluation set (default: seg_data_dir's seg_eval_subset).
        seg_eval_images: plain image folder of the evaluation set instead.
        seg_eval_masks: its mask folder.
        seg_eval_subset: official subset of the evaluation set.
        segmentation: SegTrainConfig values of every Table 1 row.
        classification: ClsTrainConfig values of every Table 2 / 3 row.
        epochs: epochs of every run (overrides both tables).
        image_size: input size of every run.
        limit: use N items of a seeded order in every run.
        encoder: encoder of the Table 1 models and of the TDBN variants (the baselines are their own).
        weights: encoder weights of every row (imagenet | none | PATH); overrides both tables.
        rows: only these rows (architecture names), e.g. for a quick check.
        external: external sets, name -> folder (ph2, isic2017): extra columns.
        external_subset: official subset of an external ISIC 2017 folder.
        bootstrap: bootstrap resamples of every interval and paired difference.
        seed: seed of every run and of the bootstrap.
        batch_size: prediction batch size of the evaluations.
        devices: data-parallel devices (auto or N).
        cache: read every row's inputs from input caches under OUT/cache, each set decoded once (False: decode
            the image files in every run).
    """

    tables: list
    out: str
    dataset: str = "ham10000"
    data_dir: str | None = None
    images: list | None = None
    seg_dir: str | None = None
    seg_data_dir: str | None = None
    seg_images: str | None = None
    seg_masks: str | None = None
    seg_eval_dataset: str = "isic2018"
    seg_eval_data_dir: str | None = None
    seg_eval_images: str | None = None
    seg_eval_masks: str | None = None
    seg_eval_subset: str = "val"
    segmentation: dict = field(default_factory=dict)
    classification: dict = field(default_factory=dict)
    epochs: int | None = None
    image_size: int | None = None
    limit: int | None = None
    encoder: str | None = None
    weights: str | None = None
    rows: list | None = None
    external: dict = field(default_factory=dict)
    external_subset: str = "test"
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 8
    devices: str | int = "auto"
    cache: bool = True

    def check(self):
        from skinkeras.data.sets import EXTERNAL_DATASETS, SEGMENTATION_DATASETS

        _devices(self)
        _positive(self, "epochs", "limit", "batch_size")
        _within(self, "bootstrap", 0, 1_000_000)
        _one_of(self, "seg_eval_dataset", SEGMENTATION_DATASETS)
        _one_of(self, "seg_eval_subset", ("train", "val", "test"))
        _one_of(self, "external_subset", ("train", "val", "test"))
        tables = ("table1", "table2", "table3")
        if "all" in self.tables:
            self.tables = list(tables)
        unknown = [t for t in self.tables if t not in tables]
        if unknown or not self.tables:
            raise ValueError(f"Unknown table {', '.join(unknown) or '(none)'}; valid: {', '.join(tables)}, all")
        self.tables = [t for t in tables if t in self.tables]
        for name in self.external:
            if name not in EXTERNAL_DATASETS:
                raise ValueError(f"Unknown --external {name}; valid: {', '.join(EXTERNAL_DATASETS)} (NAME=DIR)")


def load_toml(path):
    """Reads an experiments/*.toml file into a flat dict (keys use underscores).

    Args:
        path: TOML file.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve(cls, file=None, **overrides):
    """Builds a config: class defaults < values from `file` < non-None `overrides`.

    Args:
        cls: config dataclass.
        file: optional TOML file of values that differ from the defaults.
        **overrides: CLI values; None means "not given".
    """
    values = {**(load_toml(file) if file else {}), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return cls.from_dict(values)
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}" if file else str(exc)) from None


def to_json(config, path):
    """Writes a config dataclass as JSON.

    Args:
        config: config dataclass instance.
        path: output file.
    """
    # Atomic: on a multi-process resume the other processes read this file while process 0 rewrites it.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2)
    os.replace(tmp, path)


def from_json(cls, path):
    """Reads a config dataclass written by `to_json` (also by earlier versions; see `upgrade`).

    Args:
        cls: config dataclass.
        path: JSON file.

    Raises:
        FileNotFoundError, ValueError: the file is missing or damaged, in one line (`runs.read_json`).
    """
    values = runs.read_json(path)
    if not isinstance(values, dict):
        raise runs.run_file_error(path, f"a JSON {type(values).__name__}, not an object of settings")
    try:
        return cls.from_dict(values)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
