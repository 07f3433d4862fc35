"""Mixed precision through Keras dtype policies: fp32, bf16 and fp16 training, evaluation and prediction.

`--precision bf16` builds models under Keras's `mixed_bfloat16` policy (`fp16`:
`mixed_float16`): variables stay float32 and layers compute in the lower
precision. What must stay float32 does, by construction of the builders: the
softmax and sigmoid output layers are pinned to float32, the losses (BCE +
Dice sums) and metrics compute in float32 on those outputs, and Grad-CAM's
gradients are taken in float32. Under `mixed_float16` Keras wraps the
optimizer in a `LossScaleOptimizer` (dynamic loss scaling) at `compile`.

A saved model keeps the policy it was built with; `with_precision` rebuilds
it under another one with the same weights, for evaluating or predicting a
float32 model in bf16 and back.
"""

import contextlib

import keras

# --precision value -> Keras dtype policy.
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def policy_name(precision):
    """The Keras dtype policy name of a `--precision` value (None: fp32).

    Args:
        precision: fp32 | bf16 | fp16, or None.
    """
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def precision_of(model):
    """The `--precision` value a model was built with (from its dtype policy).

    Args:
        model: a Keras model.
    """
    name = keras.dtype_policies.get(model.dtype_policy).name
    return {policy: precision for precision, policy in PRECISIONS.items()}.get(name, "fp32")


@contextlib.contextmanager
def precision_scope(precision):
    """Sets the global dtype policy for the block (models built inside compute in `precision`).

    Raises a one-line ValueError where this backend and device cannot compute in `precision`.

    Args:
        precision: fp32 | bf16 | fp16, or None (fp32).
    """
    from skinkeras.backend_config import precision_unsupported

    name = policy_name(precision)
    reason = precision_unsupported(precision)
    if reason:
        raise ValueError(reason)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _repolicy(node, policy, pinned):
    """Replaces float32 layer policies in a serialized model, in place, except pinned layers and inputs.

    Args:
        node: a serialized Keras object (dict / list), walked recursively.
        policy: the new policy name.
        pinned: layer names that stay float32 (the model's outputs).
    """
    if isinstance(node, list):
        for item in node:
            _repolicy(item, policy, pinned)
        return
    if not isinstance(node, dict):
        return
    config = node.get("config")
    if isinstance(config, dict) and "dtype" in config and node.get("class_name") != "InputLayer" \
            and config.get("name") not in pinned:
        dtype = config["dtype"]
        name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
        if name in PRECISIONS.values() and name != policy:
            config["dtype"] = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": policy},
                               "registered_name": None}
    for value in node.values():
        _repolicy(value, policy, pinned)


def with_precision(model, precision):
    """The model rebuilt under another precision with the same weights (the model itself if it already is).

    The output layers named by the model's contract (softmax probabilities,
    sigmoid masks) stay float32.

    Args:
        model: a built Keras model (a `SkinModel` or any functional model).
        precision: fp32 | bf16 | fp16, or None (fp32).
    """
    from skinkeras.models.contract import AUX_OUTPUTS, MASK, PROBABILITIES

    policy = policy_name(precision)
    if keras.dtype_policies.get(model.dtype_policy).name == policy:
        return model
    serialized = keras.saving.serialize_keras_object(model)
    _repolicy(serialized, policy, {MASK, PROBABILITIES, *AUX_OUTPUTS})
    # Sublayers made in a layer's __init__ take the global policy, so it is set while rebuilding.
    with precision_scope(precision):
        rebuilt = keras.saving.deserialize_keras_object(serialized)
    rebuilt.set_weights(model.get_weights())
    return rebuilt
