"""Grad-CAM (Selvaraju et al., 2017) for the TDBN and the Table 2 baselines (paper 6.4, Figure 7).

The targets come from the model's contract (`contract_of(model)`): which
top-level layer gives each map, the image it is drawn over, whether it
reaches the class score only as attention keys, whether it is ViT tokens,
and which layer gives the pre-softmax class scores.

Each map is taken by splitting the classifier at the map into `features`
(model inputs -> map) and `head` (map + the other inputs -> class scores).
The split is built on a disposable clone of the classifier (same
architecture, a copy of its weights), never on the classifier itself, so
the user's model keeps its graph and config and can still be saved after
its CAMs were taken; the price is one rebuild of the model per
`cam_targets` call. The gradient of the chosen class score with respect to
the map comes from the active backend's own autodiff
(`skinkeras.explain.gradients`); everything else here is numpy and public
`keras` graph API, the same on every backend.

Pipeline: `grad_cam` gives raw maps at feature resolution (channel weights =
spatial mean of the gradient, ReLU of the weighted sum); `upsample_cams`
resizes them to the input size and normalises each to [0, 1]; `overlay` and
`plot_cam_grid` render; `cam_mass_in_mask` and `pointing_game` measure them
against a lesion mask.
"""

from dataclasses import dataclass, field

import keras
import numpy as np
from PIL import Image

from skinkeras.explain.gradients import class_score_gradients
from skinkeras.models.contract import contract_of
from skinkeras.models.layout import runs_channels_first
from skinkeras.precision import with_precision


@dataclass
class CamTarget:
    """Where a CAM is taken: one feature map of the model, split into two models.

    Args:
        branch: name of this map in the results ("original", "segmented").
        layer: the target layer, as a user would name it.
        features: model [feature inputs] -> target map.
        feature_inputs: the model input names `features` takes, in order.
        head: model [target map, *other inputs] -> class scores (pre-softmax).
        other_inputs: the model input names `head` takes after the map, in order.
        tokens: whether the map is (B, T, D) tokens (ViT) rather than (B, h, w, C).
        keys_only: whether the map reaches the score only as attention keys (the TDBN's segmented branch),
            where Grad-CAM's weights are zero by construction (see `weight_ratio`).
    """

    branch: str
    layer: str
    features: keras.Model
    feature_inputs: tuple
    head: keras.Model
    other_inputs: tuple
    tokens: bool = False
    keys_only: bool = False


@dataclass
class CamResult:
    """Raw Grad-CAM maps of a batch.

    Args:
        probabilities: (B, num_classes) model output.
        class_index: (B,) class whose score was explained.
        raw: branch -> (B, h, w) non-negative maps at feature resolution.
        targets: the `CamTarget`s used.
        method: "gradcam" or "layercam".
        degenerate: branch -> (B,) bool, maps that were round-off (`degenerate_maps`; drawn as zeros).
    """

    probabilities: np.ndarray
    class_index: np.ndarray
    raw: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)
    method: str = "gradcam"
    degenerate: dict = field(default_factory=dict)


def _clone(model):
    """(clone, calls): a disposable copy of `model` and the calls of its top-level layers in the copy's graph.

    `keras.models.clone_model` rebuilds every top-level layer from its config
    (a nested encoder as a whole) and calls it on the copy's inputs through
    `capture`, which records each call. Then each layer's weights are copied.
    Nothing is added to `model`'s graph.

    Args:
        model: functional classifier.

    Returns:
        The clone, and layer name -> list of (cloned layer, input tensors, output tensors), one per call.
    """
    pairs, calls = [], {}

    def clone_layer(layer):
        copy = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, copy))
        return copy

    def capture(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        inputs = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        calls.setdefault(layer.name, []).append((layer, inputs, keras.tree.flatten(outputs)))
        return outputs

    clone = keras.models.clone_model(model, clone_function=clone_layer, call_function=capture)
    for layer, copy in pairs:
        weights = layer.get_weights()
        if [w.shape for w in weights] != [tuple(v.shape) for v in copy.weights]:
            raise RuntimeError(f"The Grad-CAM copy of layer {layer.name!r} has other variables than the layer "
                               f"({len(copy.weights)} vs {len(weights)}); it cannot take its weights")
        copy.set_weights(weights)
    if len(clone.weights) != len(model.weights):
        raise RuntimeError(f"The Grad-CAM copy of {model.name!r} has {len(clone.weights)} variables, the model "
                           f"{len(model.weights)}")
    return clone, calls


def _builds(inputs, outputs):
    """Whether `keras.Model(inputs, outputs)` can be built (every path to `outputs` starts at one of `inputs`)."""
    try:
        keras.Model(inputs, outputs)
    except ValueError:
        return False
    return True


class _Graph:
    """The clone of a classifier and the tensors Grad-CAM cuts it at.

    Args:
        model: functional classifier (the user's; only read).
        contract: `contract_of(model)`.
    """

    def __init__(self, model, contract):
        self.model, self.contract = model, contract
        # A bf16 / fp16 model is explained in float32: low-precision gradients of the class score are too coarse
        # for the channel weights.
        self.clone, self.calls = _clone(with_precision(model, "fp32"))
        self.inputs = {t.name: t for t in self.clone.inputs}
        # A model without a score layer in its contract: explain its output itself.
        self.scores = self.output_of(contract.logits) if contract.logits else self.clone.outputs[0]

    def call_of(self, name):
        """(cloned layer, input tensors, output tensors) of the one call of layer `name` in the clone."""
        calls = self.calls.get(name, [])
        if len(calls) != 1:
            raise ValueError(f"Layer {name!r} is called {len(calls)} times in {self.model.name!r}; Grad-CAM needs "
                             "one call")
        return calls[0]

    def output_of(self, name):
        outputs = self.call_of(name)[2]
        if len(outputs) != 1:
            raise ValueError(f"Layer {name!r} has {len(outputs)} outputs; Grad-CAM needs one")
        return outputs[0]

    def needed(self, outputs, leading=()):
        """Names of the clone's inputs that `outputs` depends on, given the tensors `leading`, in input order.

        Public API only: `keras.Model` accepts inputs that the outputs do not
        use and refuses a set of inputs that misses one, so an input is needed
        exactly when the model cannot be built without it.
        """
        names = list(self.inputs)
        for name in list(names):
            rest = [n for n in names if n != name]
            if _builds([*leading, *(self.inputs[n] for n in rest)], outputs):
                names = rest
        return tuple(names)

    def branch_of(self, image_input):
        """(result name, keys_only) of a map drawn over `image_input`: those of the contract's target on that image."""
        for target in self.contract.targets:
            if target.image_input == image_input:
                return target.name, target.keys_only
        return image_input, False

    def split(self, cut, layer_name, target=None, head_cut=None, head_prefix=None):
        """Builds a `CamTarget` from the clone's tensor `cut`.

        Args:
            cut: tensor of the clone's graph whose value is the map.
            layer_name: display name of the target layer.
            target: the contract's `ExplanationTarget` for this map (or for the encoder that holds it), or None:
                then the map is named after the one image input it depends on.
            head_cut: tensor where the head starts (defaults to `cut`).
            head_prefix: callable map -> head_cut value, for maps inside a nested encoder.
        """
        rank = len(cut.shape)
        if rank not in (3, 4):
            raise ValueError(f"Grad-CAM needs a (B, h, w, C) map or (B, T, D) tokens; {layer_name!r} gives {cut.shape}")
        if target is not None and head_prefix is None and target.tokens != (rank == 3):
            raise ValueError(f"The contract of {self.model.name!r} declares {layer_name!r} as "
                             f"{'tokens' if target.tokens else 'a map'}, but it gives {cut.shape}")
        feature_inputs = self.needed(cut)
        head_cut = cut if head_cut is None else head_cut
        other_inputs = self.needed(self.scores, (head_cut,))
        bypass = [n for n in other_inputs if n in feature_inputs]
        if bypass:
            raise ValueError(f"Grad-CAM cannot split {self.model.name!r} at {layer_name!r} (not a cut of the graph: "
                             f"{', '.join(bypass)} also reaches the scores around it); name a layer that all paths to "
                             "the output go through")
        if target is None:
            images = [n for n in feature_inputs if n in self.contract.image_inputs]
            if len(images) != 1:
                raise ValueError(f"Layer {layer_name!r} depends on {len(images)} image inputs; Grad-CAM needs a layer "
                                 "of one image branch")
            branch, keys_only = self.branch_of(images[0])
        else:
            if target.image_input not in feature_inputs:
                raise ValueError(f"The contract of {self.model.name!r} draws {layer_name!r} over "
                                 f"{target.image_input!r}, but it depends on {', '.join(feature_inputs)}")
            branch, keys_only = target.name, target.keys_only
        features = keras.Model([self.inputs[n] for n in feature_inputs], cut, name=f"{branch}_cam_features")
        rest = keras.Model([head_cut, *(self.inputs[n] for n in other_inputs)], self.scores, name=f"{branch}_cam_rest")
        if head_prefix is None:
            head = rest
        else:
            fmap = keras.Input(tuple(cut.shape[1:]), name=f"{branch}_cam_map")
            others = [keras.Input(tuple(self.inputs[n].shape[1:]), dtype=self.inputs[n].dtype,
                                  name=f"{branch}_cam_{n}") for n in other_inputs]
            head = keras.Model([fmap, *others], rest([head_prefix(fmap), *others]), name=f"{branch}_cam_head")
        return CamTarget(branch, layer_name, features, feature_inputs, head, other_inputs, rank == 3, keys_only)


def cam_targets(model, layer=None):
    """Finds the Grad-CAM targets of a classifier: one per image branch.

    Default: the contract's explanation targets (`contract_of(model).targets`:
    for the TDBN and the CNN baselines the output of each nested encoder, the
    last convolutional block at stride 32; for the ViT the last block's
    tokens), with their names, image inputs and key-only / token flags. The
    class scores are the output of the contract's score layer (pre-softmax).

    `layer` may name a top-level layer of the model or a layer inside its
    nested encoders (e.g. "conv5_block16_concat" of DenseNet201); inside the
    TDBN that gives one target per encoder. A map inside an encoder, or a
    top-level map of one image branch, is named after and takes `keys_only`
    from the contract's target drawn over the same image.

    The targets are taken on a clone of the model (`keras.models.clone_model`
    plus a copy of its weights), never on the model itself: the model's
    graph and config stay as they were, and it can be saved afterwards. The
    cost is one rebuild of the model per call (measured for a DenseNet201
    TDBN on a 2-core CPU: 10-18 s on any backend, about as long as building
    it) and a second copy of its weights while the targets live. Build the
    targets once and pass them to every `grad_cam` call (`targets=`); they
    hold the weights of the moment they were built.

    Args:
        model: functional classifier of this project (TDBN variant or Table 2 baseline).
        layer: target layer name, or None for the contract's targets.
    """
    contract = contract_of(model)
    top = {lay.name: lay for lay in model.layers}
    if layer is None:
        if not contract.targets:
            raise ValueError(f"The contract of {model.name!r} declares no Grad-CAM targets; name the target with "
                             "--layer")
        missing = [t.layer for t in contract.targets if t.layer not in top]
        if missing:
            raise ValueError(f"The contract of {model.name!r} names target layers it lacks: {', '.join(missing)}")
        graph = _Graph(model, contract)
        return [graph.split(graph.output_of(t.layer), t.layer, t) for t in contract.targets]
    declared = {t.layer: t for t in contract.targets}
    if layer in top:
        graph = _Graph(model, contract)
        return [graph.split(graph.output_of(layer), layer, declared.get(layer))]
    encoders = [name for name, nested in top.items()
                if isinstance(nested, keras.Model) and layer in {lay.name for lay in nested.layers}]
    if not encoders:
        raise ValueError(f"No layer {layer!r} in {model.name!r} or its encoders; top-level layers: "
                         f"{', '.join(top)} (see model.summary() / encoder.summary() for the inner names)")
    graph = _Graph(model, contract)
    targets = []
    for name in encoders:
        nested, outer_in, outer_out = graph.call_of(name)
        if runs_channels_first(nested):
            raise ValueError(f"{name!r} computes channels_first: Grad-CAM of its inner layer {layer!r} would read "
                             "a (B, C, h, w) map; explain the default targets (no --layer), or a model built "
                             "channels_last")
        if len(outer_in) != 1 or len(outer_out) != 1:
            raise ValueError(f"Grad-CAM needs encoder {name!r} to take one input and give one output")
        inner = nested.get_layer(layer).output
        try:
            to_map = keras.Model(nested.inputs, inner)
            from_map = keras.Model(inner, nested.outputs[0])
        except ValueError as err:
            raise ValueError(f"Grad-CAM cannot split {name!r} at {layer!r} (not a cut of the encoder: {err}); "
                             "name a layer that all paths go through, e.g. a block output") from err
        targets.append(graph.split(to_map(outer_in[0]), f"{name}/{layer}", declared.get(name), head_cut=outer_out[0],
                                   head_prefix=from_map))
    return targets


def tokens_to_grid(tokens, image_size):
    """(B, T, D) ViT tokens -> (B, h, w, D) patch grid, dropping leading class tokens.

    Args:
        tokens: numpy tokens.
        image_size: (H, W) of the input, which fixes the grid's aspect.
    """
    count = tokens.shape[1]
    height, width = image_size
    for extra in (1, 0, 2):
        n = count - extra
        h = int(round(np.sqrt(n * height / width)))
        # A ViT input is a whole number of patches, so the grid has exactly the image's aspect.
        if h > 0 and n % h == 0 and (n // h) * height == h * width:
            return tokens[:, extra:].reshape(tokens.shape[0], h, n // h, tokens.shape[2])
    raise ValueError(f"{count} tokens do not form a patch grid for a {height}x{width} input")


METHODS = ("gradcam", "layercam")
# Below this ratio the Grad-CAM channel weights are float round-off (see `weight_ratio`).
DEGENERATE_RATIO = 1e-4
# A map whose first-order effect on the class score is below this share of the score carries no signal.
NEGLIGIBLE_EFFECT = 1e-5


def weight_ratio(gradients):
    """||mean_hw g|| / ||mean_hw |g|||, per sample: how much of the gradient survives Grad-CAM's spatial mean.

    It is about 1 when the gradient has one sign over space, and 0 when the
    class score is invariant to adding a constant to every position of a
    channel. That is exactly the TDBN's segmented branch: its tokens are only
    the attention keys, and a shift shared by all keys adds the same constant
    to every attention logit of a query, which the softmax removes. Its
    Grad-CAM weights are zero up to round-off (ratio ~1e-7), and the map would
    be amplified noise; LayerCAM, which weights each position by its own
    gradient, is defined there.

    Args:
        gradients: (B, h, w, C).
    """
    g = gradients.astype(np.float64)
    spread = np.linalg.norm(np.abs(g).mean(axis=(1, 2)), axis=1)
    return np.where(spread > 0, np.linalg.norm(g.mean(axis=(1, 2)), axis=1) / np.maximum(spread, 1e-300), 0.0)


def degenerate_maps(feature_map, gradients, scores, method="gradcam"):
    """(B,) bool: maps that would only show round-off, drawn as zeros and left out of the measures.

    A map is degenerate when the map's first-order effect on the class score,
    sum |g * A|, is below NEGLIGIBLE_EFFECT of |score| (the gradient vanished,
    e.g. behind a saturated softmax; what is left is underflow noise), or, for
    Grad-CAM, when `weight_ratio` is below DEGENERATE_RATIO (the weights cancel).

    Args:
        feature_map: (B, h, w, C) activations A.
        gradients: (B, h, w, C) gradient g of the class score.
        scores: (B,) class scores.
        method: "gradcam" or "layercam".
    """
    effect = np.abs(gradients.astype(np.float64) * feature_map.astype(np.float64)).sum(axis=(1, 2, 3))
    negligible = effect <= NEGLIGIBLE_EFFECT * np.abs(np.asarray(scores, np.float64))
    if method == "gradcam":
        negligible |= weight_ratio(gradients) < DEGENERATE_RATIO
    return negligible


def raw_cam(feature_map, gradients, method="gradcam"):
    """Class activation map at feature resolution.

    "gradcam" (Selvaraju et al., 2017): ReLU(sum_c mean_hw(dy/dA_c) * A_c).
    "layercam" (Jiang et al., 2021): ReLU(sum_c ReLU(dy/dA_c[h, w]) * A_c[h, w]).

    Args:
        feature_map: (B, h, w, C) activations A.
        gradients: (B, h, w, C) gradient of the class score with respect to A.
        method: one of METHODS.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown CAM method {method!r}; valid: {', '.join(METHODS)}")
    fmap, g = feature_map.astype(np.float64), gradients.astype(np.float64)
    if method == "layercam":
        return np.maximum(np.sum(np.maximum(g, 0.0) * fmap, axis=-1), 0.0).astype(np.float32)
    return np.maximum(np.einsum("bhwc,bc->bhw", fmap, g.mean(axis=(1, 2))), 0.0).astype(np.float32)


def _to_float(array):
    return np.asarray(array, np.float32)


def grad_cam(model, inputs, class_index=None, layer=None, batch_size=8, targets=None, method="gradcam",
             progress=False):
    """Computes raw Grad-CAM maps for every image branch of `model`.

    Args:
        model: classifier (TDBN variant or baseline) returning probabilities; its contract names the score layer.
        inputs: dict input name -> numpy array (images 0-255 RGB at the model's size).
        class_index: None (the predicted class), an int for every sample, or a (B,) array.
        layer: target layer name (see `cam_targets`), or None.
        batch_size: samples per gradient call.
        targets: precomputed `cam_targets(model, layer)`, reused across calls (without it, each call rebuilds a
            clone of the model once; see `cam_targets`).
        method: "gradcam" or "layercam" (see `raw_cam`).
        progress: show a progress bar over images.

    Returns:
        `CamResult`.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown CAM method {method!r}; valid: {', '.join(METHODS)}")
    targets = targets or cam_targets(model, layer)
    names = [t.name for t in model.inputs]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"Grad-CAM inputs lack {', '.join(missing)} (the model takes {', '.join(names)})")
    count = len(inputs[names[0]])
    image_size = next(tuple(t.shape[1:3]) for t in model.inputs if len(t.shape) == 4)
    probabilities, raw, degenerate = [], {t.branch: [] for t in targets}, {t.branch: [] for t in targets}
    chosen = None if class_index is None else np.broadcast_to(np.asarray(class_index, np.int64), (count,))
    bar = keras.utils.Progbar(count, unit_name="image") if progress else None
    for start in range(0, count, batch_size):
        batch = {n: _to_float(inputs[n][start:start + batch_size]) for n in names}
        probs = keras.ops.convert_to_numpy(model(batch, training=False)).astype(np.float32)
        probabilities.append(probs)
        index = probs.argmax(axis=1) if chosen is None else chosen[start:start + len(probs)]
        for target in targets:
            fmap = keras.ops.convert_to_numpy(target.features([batch[n] for n in target.feature_inputs],
                                                              training=False))
            grads, scores = class_score_gradients(target.head, fmap, [batch[n] for n in target.other_inputs], index)
            if target.tokens:
                fmap, grads = tokens_to_grid(fmap, image_size), tokens_to_grid(grads, image_size)
            maps, flat = raw_cam(fmap, grads, method), degenerate_maps(fmap, grads, scores, method)
            if method == "gradcam" and target.keys_only:
                flat[:] = True  # zero weights in exact arithmetic; whatever survives is round-off
            maps[flat] = 0.0
            raw[target.branch].append(maps)
            degenerate[target.branch].append(flat)
        if bar is not None:
            bar.update(min(start + batch_size, count))
    probabilities = np.concatenate(probabilities)
    final_index = probabilities.argmax(axis=1) if chosen is None else np.asarray(chosen)
    join = lambda parts: {b: np.concatenate(p) for b, p in parts.items()}  # noqa: E731
    return CamResult(probabilities, final_index, join(raw), targets, method, join(degenerate))


def upsample_cams(maps, size):
    """Resizes raw maps bilinearly to (H, W) and scales each to [0, 1] by its maximum (all-zero maps stay 0).

    Args:
        maps: (B, h, w) non-negative raw maps.
        size: (H, W) of the input image.
    """
    out = np.zeros((len(maps), *size), np.float32)
    for i, cam in enumerate(maps):
        img = Image.fromarray(np.asarray(cam, np.float32), mode="F").resize((size[1], size[0]), Image.BILINEAR)
        resized = np.maximum(np.asarray(img, np.float32), 0.0)
        peak = resized.max()
        out[i] = resized / peak if peak > 0 else 0.0
    return out


def cam_mass_in_mask(cam, mask):
    """Share of the CAM's mass inside the lesion mask (NaN for an all-zero CAM).

    Args:
        cam: (H, W) non-negative map.
        mask: (H, W) boolean lesion mask at the same size.
    """
    total = float(np.sum(cam))
    return float(np.sum(cam[np.asarray(mask, bool)]) / total) if total > 0 else float("nan")


def pointing_game(cam, mask):
    """Whether the CAM's maximum falls inside the lesion mask (Zhang et al., 2018); NaN for an all-zero CAM.

    Args:
        cam: (H, W) map.
        mask: (H, W) boolean lesion mask at the same size.
    """
    if not np.any(cam > 0):
        return float("nan")
    return float(np.asarray(mask, bool).flat[int(np.argmax(cam))])


def overlay(image, cam, alpha=0.45, cmap="jet"):
    """Blends a [0, 1] map, coloured with a matplotlib colormap, over a uint8 RGB image.

    Args:
        image: (H, W, 3) uint8.
        cam: (H, W) in [0, 1].
        alpha: weight of the heatmap.
        cmap: matplotlib colormap name.
    """
    import matplotlib

    colours = matplotlib.colormaps[cmap](np.clip(cam, 0, 1))[..., :3] * 255.0
    return np.clip((1 - alpha) * np.asarray(image, np.float32) + alpha * colours, 0, 255).astype(np.uint8)


def plot_cam_grid(rows, column_titles, path, cell=2.2):
    """Writes a Figure 7-style grid: one row per image, one column per panel (original, then CAM overlays).

    Args:
        rows: list of (row label, [uint8 RGB panels]).
        column_titles: one title per column.
        path: output PNG.
        cell: inches per panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = len(column_titles)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(cell * n_cols, cell * len(rows)), squeeze=False)
    for r, (label, panels) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(panels) and panels[c] is not None:
                ax.imshow(panels[c])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=8)
        axes[r, 0].text(-0.04, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right",
                        fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
