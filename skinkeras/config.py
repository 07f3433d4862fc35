"""Run configurations: paper defaults, overridden by an experiments/*.toml file, then by CLI options."""

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field


@dataclass
class SegTrainConfig:
    """Segmentation training settings; defaults follow paper 4.1.2 where it gives them.

    Args:
        data_dir: ISIC 2018 Task 1 folder (official layout).
        images: plain image folder (instead of data_dir).
        masks: plain mask folder (with images).
        arch: deep_unet | unet | unetpp | deeplabv3plus.
        encoder: encoder table name.
        weights: imagenet | none | PATH of encoder weights.
        image_size: square input size (multiple of 32).
        epochs: training epochs (paper: 12).
        batch_size: batch size (paper: 32).
        learning_rate: Adam learning rate (paper: 1e-4).
        lr_step_epochs: halve the learning rate every this many epochs (paper: 4).
        lr_factor: learning-rate decay factor per step (paper: 0.5).
        val_fraction: validation share (paper: 0.2).
        seed: seed of the split, shuffling, augmentation and initialisation.
        limit: use only the first N pairs of a seeded order.
        flip_prob: horizontal flip probability (paper 4.2: 0.5).
        max_rotation: rotation range in degrees (paper 4.2: 15).
        aspp_rates: Deep-UNet ASPP dilation rates (paper: "e.g. 1, 2, 3").
        aspp_filters: ASPP channels (not in the paper).
        decoder_filters: decoder channels per level, deepest first (not in the paper).
        aux_weights: deep-supervision loss weights (paper Eq. 4: 0.2, 0.1).
        bn_momentum: BatchNorm moving-average momentum (0.9 = PyTorch's default, which the paper used).
        out: run folder.
    """

    data_dir: str | None = None
    images: str | None = None
    masks: str | None = None
    arch: str = "deep_unet"
    encoder: str = "efficientnetb3"
    weights: str = "imagenet"
    image_size: int = 224
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-4
    lr_step_epochs: int = 4
    lr_factor: float = 0.5
    val_fraction: float = 0.2
    seed: int = 0
    limit: int | None = None
    flip_prob: float = 0.5
    max_rotation: float = 15.0
    aspp_rates: list = field(default_factory=lambda: [1, 2, 3])
    aspp_filters: int = 256
    decoder_filters: list = field(default_factory=lambda: [256, 128, 64, 32, 16])
    aux_weights: list = field(default_factory=lambda: [0.2, 0.1])
    bn_momentum: float = 0.9
    out: str | None = None


def load_toml(path):
    """Reads an experiments/*.toml file into a flat dict (keys use underscores).

    Args:
        path: TOML file.
    """
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve(cls, file=None, **overrides):
    """Builds a config: class defaults < values from `file` < non-None `overrides`.

    Args:
        cls: config dataclass.
        file: optional TOML file of values that differ from the defaults.
        **overrides: CLI values; None means "not given".
    """
    names = {f.name for f in dataclasses.fields(cls)}
    values = load_toml(file) if file else {}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{file}: unknown keys {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def to_json(config, path):
    """Writes a config dataclass as JSON.

    Args:
        config: config dataclass instance.
        path: output file.
    """
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2)


def from_json(cls, path):
    """Reads a config dataclass written by `to_json`.

    Args:
        cls: config dataclass.
        path: JSON file.
    """
    with open(path) as f:
        return cls(**json.load(f))


@dataclass
class ClsTrainConfig:
    """Classification training settings; defaults follow paper 4.2 and 6.1 where it gives them.

    Args:
        dataset: ham10000 | isic2019.
        data_dir: dataset folder in its official layout.
        images: image folder(s) instead of the official ones.
        seg_dir: folder written by `segment` (its segmented/ images feed the segmented branch).
        variant: tdbn | tdbn_no_meta | original_only | segmented_only (Table 3).
        arch: a Table 2 baseline (densenet201, resnet50, xception, mobilenetv2, efficientnetb3, vit) instead of a variant.
        split: lesion (grouped by lesion_id, default) | image (the paper-style random image split).
        fractions: train / validation / test shares.
        metadata_encoder: mlp (Eq. 7) | transformer.
        encoder: encoder of the TDBN variants (DenseNet201 in the paper).
        weights: imagenet | none | PATH.
        image_size: input size.
        epochs: training epochs (paper: 10).
        batch_size: batch size (paper: 32).
        learning_rate: Adam learning rate (paper: 1e-4).
        weight_decay: Adam weight decay (paper: 1e-4; Keras applies it decoupled, as AdamW).
        lr_step_epochs: halve the learning rate every this many epochs (paper: 3).
        lr_factor: learning-rate decay factor per step.
        balance: cap majority / expand minority classes of the training split (paper 4.2).
        balance_cap: largest class size per epoch (default: twice the mean class size).
        balance_floor: size minority classes are expanded to (default: half the mean class size).
        flip_prob: horizontal flip probability.
        max_rotation: rotation range in degrees.
        num_heads: cross-attention heads (not in the paper).
        key_dim: cross-attention key size per head (None: channels // heads).
        dropout: dropout of the projection and head blocks (not in the paper).
        bn_momentum: BatchNorm momentum (0.9 = PyTorch's default).
        seed: seed of split, balancing, augmentation and initialisation.
        limit: use N images of a seeded order.
        out: run folder.
    """

    dataset: str = "ham10000"
    data_dir: str | None = None
    images: list | None = None
    seg_dir: str | None = None
    variant: str = "tdbn"
    arch: str | None = None
    split: str = "lesion"
    fractions: list = field(default_factory=lambda: [0.7, 0.15, 0.15])
    metadata_encoder: str = "mlp"
    encoder: str = "densenet201"
    weights: str = "imagenet"
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    lr_step_epochs: int = 3
    lr_factor: float = 0.5
    balance: bool = True
    balance_cap: int | None = None
    balance_floor: int | None = None
    flip_prob: float = 0.5
    max_rotation: float = 15.0
    num_heads: int = 8
    key_dim: int | None = None
    dropout: float = 0.3
    bn_momentum: float = 0.9
    seed: int = 0
    limit: int | None = None
    out: str | None = None
