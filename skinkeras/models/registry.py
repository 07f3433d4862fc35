"""The architecture registry: every segmentation and classification model by name, with its builder,
the config fields it takes and the inputs it needs.

Training, the bench and `reproduce` look a model up here; an unknown name
lists the valid ones.
"""

from dataclasses import dataclass, field

from skinkeras.models.cls_baselines import CLS_ARCHS, build_cls_baseline
from skinkeras.models.contract import CLASSIFICATION, IMAGE, METADATA, METADATA_MASK, ORIGINAL, SEGMENTATION, SEGMENTED
from skinkeras.models.deep_unet import build_deep_unet
from skinkeras.models.seg_baselines import build_deeplabv3plus, build_unet, build_unetpp
from skinkeras.models.tdbn import VARIANTS, build_tdbn

_SEG_COMMON = ("image_size", "encoder", "weights", "bn_momentum")
_TDBN_FIELDS = ("image_size", "encoder", "weights", "metadata_encoder", "num_heads", "key_dim", "ffn_dim",
                "attention_dropout", "dropout", "projection_dim", "head_units", "tabular_units", "metadata_dim",
                "metadata_heads", "metadata_layers", "bn_momentum")
_BASELINE_FIELDS = ("image_size", "weights", "dropout", "head_units", "bn_momentum")
_VIT_FIELDS = ("vit_patch_size", "vit_dim", "vit_depth", "vit_heads", "vit_mlp_dim", "vit_dropout")
_VARIANT_INPUTS = {
    "tdbn": (ORIGINAL, SEGMENTED, METADATA, METADATA_MASK),
    "tdbn_no_meta": (ORIGINAL, SEGMENTED),
    "original_only": (ORIGINAL,),
    "segmented_only": (SEGMENTED,),
}


@dataclass(frozen=True)
class Architecture:
    """One registry row.

    Args:
        name: registry name (the `--arch` / `--variant` value).
        task: SEGMENTATION or CLASSIFICATION.
        builder: the builder function.
        fields: config fields passed to the builder under the same keyword.
        inputs: input names of the built model.
        fixed: keyword arguments fixed by the name (the TDBN variant, the baseline's encoder).
        paper: where the model comes from.
    """

    name: str
    task: str
    builder: object
    fields: tuple
    inputs: tuple
    fixed: dict = field(default_factory=dict)
    paper: str = ""

    def builder_kwargs(self, cfg):
        """The builder's keyword arguments taken from a config (lists become tuples).

        Args:
            cfg: a config with every field in `fields`.
        """
        values = {name: getattr(cfg, name) for name in self.fields}
        return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}

    def build(self, cfg, **runtime):
        """Builds the model from a config, plus what only the data knows (num_classes, num_features).

        Args:
            cfg: a config with every field in `fields`.
            **runtime: extra builder arguments.
        """
        return self.builder(**self.fixed, **self.builder_kwargs(cfg), **runtime)

    @property
    def needs_segmented(self):
        """Whether the model reads segmented images."""
        return SEGMENTED in self.inputs

    @property
    def needs_metadata(self):
        """Whether the model reads the clinical metadata."""
        return METADATA in self.inputs


ARCHITECTURES = {
    "deep_unet": Architecture("deep_unet", SEGMENTATION, build_deep_unet,
                              _SEG_COMMON + ("decoder_filters", "aspp_filters", "aspp_rates"), (IMAGE,),
                              paper="4.1.1, Figure 1"),
    "unet": Architecture("unet", SEGMENTATION, build_unet, _SEG_COMMON + ("decoder_filters",), (IMAGE,),
                         paper="Table 1"),
    "unetpp": Architecture("unetpp", SEGMENTATION, build_unetpp, _SEG_COMMON + ("decoder_filters",), (IMAGE,),
                           paper="Table 1"),
    "deeplabv3plus": Architecture("deeplabv3plus", SEGMENTATION, build_deeplabv3plus, _SEG_COMMON, (IMAGE,),
                                  paper="Table 1"),
    **{variant: Architecture(variant, CLASSIFICATION, build_tdbn, _TDBN_FIELDS, _VARIANT_INPUTS[variant],
                             {"variant": variant}, paper="5, Figure 5" if variant == "tdbn" else "Table 3")
       for variant in VARIANTS},
    **{name: Architecture(name, CLASSIFICATION, build_cls_baseline,
                          _BASELINE_FIELDS + (_VIT_FIELDS if name == "vit" else ()), (ORIGINAL,), {"arch": name},
                          paper="Table 2")
       for name in CLS_ARCHS},
}


def architectures(task=None):
    """Registry names, optionally of one task.

    Args:
        task: SEGMENTATION, CLASSIFICATION or None for all.
    """
    return tuple(name for name, arch in ARCHITECTURES.items() if task in (None, arch.task))


def get_architecture(name, task=None):
    """The registry row of `name`; an unknown name (or one of another task) lists the valid ones.

    Args:
        name: registry name, case-insensitive.
        task: SEGMENTATION or CLASSIFICATION to restrict the lookup.
    """
    key = str(name).lower()
    arch = ARCHITECTURES.get(key)
    if arch is None or (task and arch.task != task):
        what = f"{task} model" if task else "model"
        raise ValueError(f"Unknown {what} {name!r}; valid: {', '.join(architectures(task))}")
    return arch


def build_model(cfg, **runtime):
    """Builds the model a training config names (`cfg.arch`), through the registry.

    Args:
        cfg: `SegTrainConfig` or `ClsTrainConfig`.
        **runtime: num_classes / num_features for classifiers.
    """
    return get_architecture(cfg.arch, cfg.task).build(cfg, **runtime)
