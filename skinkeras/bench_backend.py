"""What the bench needs from each backend directly: symbolic tracing, device synchronisation, accelerator memory.

The one module of the bench that imports torch, jax or tensorflow (each only under its own backend).
"""


def trace(fn, shapes):
    """Runs `fn` once on float32 inputs of `shapes`: traced without arithmetic on JAX and TensorFlow, on zeros on torch.

    Args:
        fn: callable taking one tensor per shape.
        shapes: input shapes.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.eval_shape(fn, *[jax.ShapeDtypeStruct(s, "float32") for s in shapes])
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn).get_concrete_function(*[tf.TensorSpec(s, tf.float32) for s in shapes])
    zeros = [keras.ops.zeros(s, "float32") for s in shapes]
    if backend == "torch":
        import torch

        with torch.no_grad():
            return fn(*zeros)
    return fn(*zeros)


def sync():
    """Waits for queued accelerator work (torch on CUDA); the other backends already return numpy."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def device_memory_mb(reset=False):
    """Peak accelerator memory in MB of this process's backend, None on a CPU; `reset` starts a new peak.

    Args:
        reset: reset the peak (where the backend can) and return None.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        if reset:
            torch.cuda.reset_peak_memory_stats()
            return None
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if reset or device.platform == "cpu":
            return None  # JAX has no peak reset: its peak covers the whole child
        peak = (device.memory_stats() or {}).get("peak_bytes_in_use")
        return None if peak is None else round(peak / 2**20, 1)
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return None
        if reset:
            tf.config.experimental.reset_memory_stats("GPU:0")
            return None
        return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)
    return None
