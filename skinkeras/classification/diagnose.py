"""`cls-diagnose`: how much the TDBN's segmented branch moves its output, and how its cross-attention spreads.

The TDBN's segmented tokens are only the attention keys (paper 5.3: original = query and value, segmented =
key). Whether the segmented image matters is therefore an empirical question about a trained model:

- *branch influence*: the test images predicted with the segmented image as given, replaced by the original image,
  and replaced by a black image; the mean absolute change of the class probabilities, how many argmax decisions
  flip, and the balanced accuracy under each input;
- *attention spread*: the entropy of each query token's attention over the key tokens, per head, against the
  uniform distribution's log N (N = (size / 32)^2 tokens). Entropy near log N means the keys barely steer which
  original tokens are mixed, whatever the segmented image shows.
"""

import os

import numpy as np

from skinkeras import runs
from skinkeras.metrics import classification_scores
from skinkeras.models.contract import ORIGINAL, SEGMENTED

ATTENTION_LAYER = "cross_attention"
TOKEN_LAYERS = {ORIGINAL: f"{ORIGINAL}_tokens", SEGMENTED: f"{SEGMENTED}_tokens"}
DIAGNOSE_JSON = "diagnose.json"


def probability_change(base, other):
    """How far `other` probabilities moved from `base` ((N, C) each).

    Args:
        base: reference probabilities.
        other: probabilities under changed inputs.

    Returns:
        dict: mean_abs_change (over samples and classes), mean_max_abs_change (per sample, the largest class
        change, averaged), flips (argmax changes) and flip_share.
    """
    diff = np.abs(np.asarray(other, np.float64) - np.asarray(base, np.float64))
    flips = int((np.argmax(other, axis=1) != np.argmax(base, axis=1)).sum())
    return {"mean_abs_change": float(diff.mean()), "mean_max_abs_change": float(diff.max(axis=1).mean()),
            "flips": flips, "flip_share": flips / max(1, len(diff))}


def attention_entropy(scores):
    """Entropy (nats) of attention weights over the keys, per query.

    Args:
        scores: (B, heads, N_query, N_key) attention probabilities.

    Returns:
        (B, heads, N_query) entropies; log(N_key) is the uniform maximum.
    """
    p = np.clip(np.asarray(scores, np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1)


def attention_scores(model, originals, segmented, batch_size=16):
    """The cross-attention weights of a TDBN for a set of image pairs.

    Args:
        model: a TDBN (tdbn or tdbn_no_meta).
        originals: (N, H, W, 3) 0-255 images (array or `CachedRows`).
        segmented: (N, H, W, 3) their segmented images.
        batch_size: images a forward pass.

    Returns:
        (N, heads, tokens, tokens) float array.
    """
    import keras

    tokens = keras.Model([model.get_layer(ORIGINAL).output, model.get_layer(SEGMENTED).output],
                         [model.get_layer(TOKEN_LAYERS[ORIGINAL]).output,
                          model.get_layer(TOKEN_LAYERS[SEGMENTED]).output])
    block = model.get_layer(ATTENTION_LAYER)
    out = []
    for start in range(0, len(originals), batch_size):
        rows = np.arange(start, min(start + batch_size, len(originals)))
        orig_tokens, seg_tokens = tokens([np.asarray(originals[rows], np.float32),
                                          np.asarray(segmented[rows], np.float32)], training=False)
        _, scores = block.attend(orig_tokens, seg_tokens, training=False, return_attention_scores=True)
        out.append(keras.ops.convert_to_numpy(scores))
    return np.concatenate(out)


def cls_diagnose(model_path, out, subset="test", batch_size=16, cache=None, progress=True):
    """Branch influence and attention spread of a trained TDBN on its run's split subset; writes diagnose.json.

    Args:
        model_path: RUN/best.keras of a tdbn or tdbn_no_meta run.
        out: output folder.
        subset: train, val or test split of the run.
        batch_size: prediction batch size.
        cache: input cache holding the subset's originals and segmented images.
        progress: show progress bars.

    Returns:
        The diagnose dict.
    """
    from skinkeras.classification.records import split_subset
    from skinkeras.inference import cls_arrays, load_cls_run, model_image_size, predict_probabilities

    run = load_cls_run(model_path)
    if ATTENTION_LAYER not in {layer.name for layer in run.model.layers}:
        raise ValueError(f"{model_path} is a {run.contract.arch} model: cls-diagnose needs a TDBN (tdbn or "
                         "tdbn_no_meta), the models with a segmented branch behind cross-attention")
    df, _, source = split_subset(run.cfg, run.dir, True, subset)
    if df.empty:
        raise ValueError(f"No images in {source}")
    size = model_image_size(run.model)
    arrays, kept, skipped = cls_arrays(df, run.encoder, size, run.contract.inputs, progress, cache, run.cfg.dataset)
    labels = df.label.to_numpy(np.int64)
    black = np.broadcast_to(np.zeros((1, *size, 3), np.uint8), (len(df), *size, 3))
    conditions = {"as_given": arrays, "segmented_is_original": {**arrays, SEGMENTED: arrays[ORIGINAL]},
                  "segmented_is_black": {**arrays, SEGMENTED: black}}
    probs = {name: predict_probabilities(run.model, inputs, labels, kept, batch_size, progress)
             for name, inputs in conditions.items()}
    truth = labels[kept]
    result = {"model": os.path.abspath(model_path), "source": source, "images": int(len(kept)),
              "skipped": len(skipped), "arch": run.contract.arch, "image_size": int(size[0])}
    result["balanced_accuracy"] = {name: classification_scores(truth, p, run.classes)["balanced_accuracy"]
                                   for name, p in probs.items()}
    result["branch_influence"] = {name: probability_change(probs["as_given"], p)
                                  for name, p in probs.items() if name != "as_given"}
    scores = attention_scores(run.model, _rows(arrays[ORIGINAL], kept), _rows(arrays[SEGMENTED], kept), batch_size)
    entropy = attention_entropy(scores)
    n_tokens = scores.shape[-1]
    uniform = float(np.log(n_tokens)) if n_tokens > 1 else 0.0
    result["attention"] = {
        "tokens": int(n_tokens), "heads": int(scores.shape[1]), "mean_entropy": float(entropy.mean()),
        "uniform_entropy": uniform,
        "entropy_share_of_uniform": float(entropy.mean() / uniform) if uniform else None,
        "per_head_mean_entropy": [float(v) for v in entropy.mean(axis=(0, 2))],
        "mean_max_weight": float(scores.max(axis=-1).mean()),
    }
    os.makedirs(out, exist_ok=True)
    runs.write_json(os.path.join(out, DIAGNOSE_JSON), result)
    return result


class _rows:
    """Positions `kept` of an array or `CachedRows`, read only when indexed (a batch reads its own rows)."""

    def __init__(self, array, kept):
        self.array, self.kept = array, np.asarray(kept, np.int64)

    def __len__(self):
        return len(self.kept)

    def __getitem__(self, rows):
        return self.array[self.kept[rows]]
