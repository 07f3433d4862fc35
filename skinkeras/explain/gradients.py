"""Gradient of a class score with respect to a feature map, through the active backend's own autodiff.

This is the only module of the package that imports jax, tensorflow or torch:
Grad-CAM needs a gradient with respect to an intermediate tensor, which
`keras.ops` does not offer. Each function imports its backend lazily, so the
other backends need not be installed.
"""

import keras
import numpy as np


def class_score_gradients(head, feature_map, others, class_index):
    """Returns (d(sum_b scores[b, class_index[b]]) / d(feature_map), the (B,) scores), both numpy.

    The sum over the batch gives every sample the gradient of its own class
    score: in inference mode (BatchNorm statistics, no dropout) the samples do
    not interact.

    Args:
        head: model [feature map, *others] -> (B, num_classes) class scores.
        feature_map: (B, ...) numpy feature map, the head's first input.
        others: numpy arrays for the head's other inputs, in its input order.
        class_index: (B,) int class per sample.
    """
    backend = keras.backend.backend()
    functions = {"jax": _jax_gradients, "tensorflow": _tf_gradients, "torch": _torch_gradients}
    if backend not in functions:
        raise RuntimeError(f"Grad-CAM supports the jax, tensorflow and torch backends, not {backend!r}")
    class_index = np.asarray(class_index, np.int32).reshape(-1)
    feature_map = np.asarray(feature_map, np.float32)
    grads, scores = functions[backend](head, feature_map, [np.asarray(o) for o in others], class_index)
    return np.asarray(grads), np.asarray(scores, np.float32).reshape(-1)


def _jax_gradients(head, feature_map, others, class_index):
    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in head.trainable_variables]
    non_trainable = [v.value for v in head.non_trainable_variables]
    index = jnp.asarray(class_index)[:, None]
    rest = [jnp.asarray(o) for o in others]

    # jax.grad differentiates a pure function: stateless_call runs the head on explicit variable values.
    def score(fmap):
        scores, _ = head.stateless_call(trainable, non_trainable, [fmap, *rest], training=False)
        chosen = jnp.take_along_axis(scores.astype("float32"), index, axis=1)
        return jnp.sum(chosen), chosen

    grads, chosen = jax.grad(score, has_aux=True)(jnp.asarray(feature_map))
    return jax.device_get(grads), jax.device_get(chosen)


def _tf_gradients(head, feature_map, others, class_index):
    import tensorflow as tf

    fmap = tf.convert_to_tensor(feature_map)
    rest = [tf.convert_to_tensor(o) for o in others]
    with tf.GradientTape() as tape:
        tape.watch(fmap)
        scores = tf.cast(head([fmap, *rest], training=False), tf.float32)
        chosen = tf.gather(scores, class_index, axis=1, batch_dims=1)
        score = tf.reduce_sum(chosen)
    return tape.gradient(score, fmap).numpy(), chosen.numpy()


def _torch_gradients(head, feature_map, others, class_index):
    import torch

    fmap = keras.ops.convert_to_tensor(feature_map).detach().requires_grad_(True)
    rest = [keras.ops.convert_to_tensor(o) for o in others]
    scores = head([fmap, *rest], training=False).float()
    index = torch.as_tensor(class_index, dtype=torch.long, device=scores.device)[:, None]
    chosen = torch.gather(scores, 1, index)
    (grad,) = torch.autograd.grad(chosen.sum(), fmap)
    return grad.detach().cpu().numpy(), chosen.detach().cpu().numpy()
