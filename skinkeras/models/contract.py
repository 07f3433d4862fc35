"""What a model of this project tells its users: input names, outputs, logits, explanation targets.

Every builder returns a `SkinModel`, a functional `keras.Model` that carries
a `Contract` in its config (the way keras-hub backbones carry
`pyramid_outputs`). Training, inference, Grad-CAM, prediction and the bench
read names from `contract_of(model)` and never re-spell or guess them.

The names themselves are spelled once, in `skinkeras.names`, and importable from here.
"""

from dataclasses import asdict, dataclass, field

import keras

# The names are spelled in skinkeras.names (below data and models); importing them here keeps
# `skinkeras.models.contract.X` the way the rest of the package reads them.
from skinkeras.names import (  # noqa: F401
    AUX_OUTPUTS,
    CLASSIFICATION,
    IMAGE,
    IMAGE_INPUTS,
    LOGITS,
    MASK,
    METADATA,
    METADATA_INPUTS,
    METADATA_MASK,
    ORIGINAL,
    PROBABILITIES,
    SEGMENTATION,
    SEGMENTED,
)


@dataclass(frozen=True)
class ExplanationTarget:
    """A feature map that Grad-CAM can explain.

    Args:
        name: name of the map in results ("original", "segmented").
        layer: top-level layer of the model whose output is the map (a nested encoder, a ViT block).
        image_input: the image input the map is drawn over.
        keys_only: the map reaches the class score only as attention keys (the TDBN's segmented
            branch), so Grad-CAM's channel weights are zero by construction.
        tokens: the map is (B, T, D) tokens (ViT) rather than (B, h, w, C).
    """

    name: str
    layer: str
    image_input: str
    keys_only: bool = False
    tokens: bool = False


@dataclass(frozen=True)
class Contract:
    """The model's promise to its users.

    Args:
        task: SEGMENTATION or CLASSIFICATION.
        inputs: input names, in the model's order.
        output: name of the output users read (MASK, or PROBABILITIES).
        logits: layer of pre-softmax class scores (classifiers), else None.
        targets: `ExplanationTarget`s, default Grad-CAM targets first.
        arch: registry name the model was built as.
    """

    task: str
    inputs: tuple
    output: str
    logits: str | None = None
    targets: tuple = field(default_factory=tuple)
    arch: str | None = None

    def to_dict(self):
        return {**asdict(self), "inputs": list(self.inputs), "targets": [asdict(t) for t in self.targets]}

    @classmethod
    def from_dict(cls, data):
        data = dict(data)
        data["inputs"] = tuple(data.get("inputs", ()))
        data["targets"] = tuple(ExplanationTarget(**t) for t in data.get("targets", ()))
        return cls(**data)

    @property
    def image_inputs(self):
        """The inputs that take images."""
        return tuple(n for n in self.inputs if n in (IMAGE, *IMAGE_INPUTS))


@keras.saving.register_keras_serializable(package="skinkeras")
class SkinModel(keras.Model):
    """A functional model that carries its `Contract` through `get_config` and `.keras` files.

    Args:
        inputs: functional inputs (a dict keyed by input name for the classifiers).
        outputs: functional outputs.
        name: model name.
        contract: `Contract` (or its dict form, as read back from a file).
    """

    def __init__(self, inputs, outputs, name=None, *, contract=None, **kwargs):
        super().__init__(inputs, outputs, name=name, **kwargs)
        self.contract = Contract.from_dict(contract) if isinstance(contract, dict) else contract

    def get_config(self):
        config = super().get_config()
        if self.contract is not None:
            config["contract"] = self.contract.to_dict()
        return config


def contract_of(model):
    """The `Contract` of a model of this project, also for files written before models carried one.

    Args:
        model: a built or loaded model.
    """
    contract = getattr(model, "contract", None)
    if contract is not None:
        return contract
    return _legacy_contract(model)


def _legacy_contract(model):
    """Reads the contract off a model saved before `SkinModel` (plain functional), from its layer names.

    Those files were written by builders that used the names above, so the
    names are the contract; this is the only place that reads it that way.
    """
    names = [t.name for t in model.inputs]
    layers = {layer.name for layer in model.layers}
    if LOGITS not in layers:
        return Contract(SEGMENTATION, tuple(names), MASK)
    targets = tuple(
        ExplanationTarget(branch, f"{branch}_encoder", branch, keys_only=branch == SEGMENTED and "cross_attention" in layers)
        for branch in IMAGE_INPUTS if f"{branch}_encoder" in layers
    )
    if not targets:
        blocks = sorted((n for n in layers if n.startswith("vit_block")), key=lambda n: int(n[len("vit_block"):]))
        if blocks:
            # the tokens entering the last block: that block's output reaches the head by its class token only
            layer = blocks[-2] if len(blocks) >= 2 else "vit_patch_embedding"
            targets = (ExplanationTarget(ORIGINAL, layer, ORIGINAL, tokens=True),)
    return Contract(CLASSIFICATION, tuple(names), PROBABILITIES, LOGITS, targets)


def export_model(model, output=None):
    """An uncompiled `SkinModel` on the same layers, restricted to its main output (the best.keras form).

    Segmentation training models have deep-supervision outputs; the exported
    model keeps only the main mask. Classifiers are exported whole, without
    optimizer state.

    Args:
        model: a model of this project.
        output: output name to keep (default: the contract's output).
    """
    contract = contract_of(model)
    outputs = model.output
    if isinstance(outputs, dict):
        outputs = outputs[output or contract.output]
    elif isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    return SkinModel(model.input, outputs, name=model.name, contract=contract)
