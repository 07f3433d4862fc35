"""Run an exported artifact with its own runtime: onnxruntime, TensorFlow, the LiteRT interpreter, torch.export.

The one module of `skinkeras.exporting` that imports a runtime (each inside the function that needs it), so the
package imports without any of them. Every runner takes a dict of float32 arrays keyed by the contract's input
names and returns the model's main output as a NumPy array.
"""

import os

import numpy as np

# The pip command that installs each runtime (one line when it is missing).
RUNTIME_PACKAGES = {
    "onnx": ("onnxruntime", 'pip install "skinkeras[export]"'),
    "tf_saved_model": ("tensorflow", "pip install tensorflow"),
    "litert": ("tensorflow", "pip install tensorflow"),
    "torch": ("torch", 'pip install "skinkeras[torch]"'),
}


class RuntimeUnavailable(ImportError):
    """The runtime a format needs is not installed."""


def require_runtime(fmt):
    """Imports and returns the runtime module of `fmt`, or raises one line naming the pip command.

    Args:
        fmt: onnx | tf_saved_model | litert | torch.
    """
    module, command = RUNTIME_PACKAGES[fmt]
    try:
        if fmt == "onnx":
            import onnxruntime as runtime
        elif fmt == "torch":
            import torch as runtime
        else:
            import tensorflow as runtime
    except ImportError:
        raise RuntimeUnavailable(f"running a {fmt} artifact needs {module}: {command}") from None
    return runtime


def main_output(out, output_name=None):
    """The main output of a model call (a Keras model's or a runtime's) as a float32 NumPy array.

    Args:
        out: an array, a list (the first is the main one) or a dict of outputs, on any backend.
        output_name: the dict key of the main output (the contract's); the first value where absent.
    """
    if isinstance(out, dict):
        out = out[output_name] if output_name in out else next(iter(out.values()))
    elif isinstance(out, (list, tuple)):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().cpu()
    return np.asarray(out, dtype=np.float32)


class OnnxRunner:
    """An ONNX file in an onnxruntime CPU session.

    Args:
        path: the .onnx file.
        input_names: the contract's input names (the session's inputs carry them; a single input may differ).
        threads: intra-op threads (None: onnxruntime's default, every core).
    """

    def __init__(self, path, input_names, dict_inputs=True, threads=None):
        ort = require_runtime("onnx")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        self.feeds = _feed_names([i.name for i in self.session.get_inputs()], input_names)

    def __call__(self, inputs):
        feed = {self.feeds[name]: np.asarray(value, np.float32) for name, value in inputs.items()}
        return main_output(self.session.run(None, feed))


class SavedModelRunner:
    """A TensorFlow SavedModel written by `model.export(format="tf_saved_model")`, called by its `serve`.

    Args:
        path: the SavedModel folder.
        input_names: the contract's input names, in the model's order.
    """

    def __init__(self, path, input_names, dict_inputs=True):
        tf = require_runtime("tf_saved_model")
        self.tf = tf
        self.artifact = tf.saved_model.load(os.fspath(path))
        self.input_names = tuple(input_names)
        self.dict_inputs = dict_inputs

    def __call__(self, inputs):
        tensors = {k: self.tf.constant(np.asarray(v, np.float32)) for k, v in inputs.items()}
        return main_output(self.artifact.serve(_structured(tensors, self.input_names, self.dict_inputs)))


class LiteRTRunner:
    """A LiteRT (TFLite) flatbuffer in the interpreter, through its serving signature.

    The interpreter is built for a fixed batch; each call resizes the inputs to the batch it gets.

    Args:
        path: the .tflite file.
        input_names: the contract's input names.
    """

    def __init__(self, path, input_names, dict_inputs=True):
        tf = require_runtime("litert")
        self.interpreter = tf.lite.Interpreter(model_path=os.fspath(path))
        details = self.interpreter.get_input_details()
        self.index = {}
        names = [d["name"] for d in details]
        feeds = _feed_names(names, input_names)
        for d in details:
            self.index[d["name"]] = d["index"]
        self.feeds = feeds
        self.output_index = self.interpreter.get_output_details()[0]["index"]

    def __call__(self, inputs):
        interp = self.interpreter
        arrays = {self.feeds[k]: np.asarray(v, np.float32) for k, v in inputs.items()}
        for name, array in arrays.items():
            interp.resize_tensor_input(self.index[name], array.shape)
        interp.allocate_tensors()
        for name, array in arrays.items():
            interp.set_tensor(self.index[name], array)
        interp.invoke()
        return np.asarray(interp.get_tensor(self.output_index), np.float32)


class TorchRunner:
    """A `torch.export` program (.pt2), loaded and called as a module in inference mode.

    Args:
        path: the .pt2 file.
        input_names: the contract's input names, in the model's order.
    """

    def __init__(self, path, input_names, dict_inputs=True):
        torch = require_runtime("torch")
        self.torch = torch
        self.module = torch.export.load(os.fspath(path)).module()
        self.input_names = tuple(input_names)
        self.dict_inputs = dict_inputs

    def __call__(self, inputs):
        torch = self.torch
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in inputs.items()}
        with torch.inference_mode():
            return main_output(self.module(_structured(tensors, self.input_names, self.dict_inputs)))


RUNNERS = {"onnx": OnnxRunner, "tf_saved_model": SavedModelRunner, "litert": LiteRTRunner, "torch": TorchRunner}


def _structured(tensors, input_names, dict_inputs):
    """The call argument of an exported Keras model: its input dict, or the bare tensor of a one-tensor model."""
    return tensors if dict_inputs else tensors[input_names[0]]


def export_options(fmt, model):
    """Keyword arguments `model.export` needs for `fmt` beyond Keras' defaults.

    torch.export specialises the batch to the traced sample's (1) unless told it is dynamic, so the program is
    exported with a dynamic batch dimension on every input.

    Args:
        fmt: the export format.
        model: the Keras model.
    """
    if fmt != "torch":
        return {}
    torch = require_runtime("torch")
    batch = torch.export.Dim("batch", min=1, max=4096)
    spec = {t.name.split(":")[0]: {0: batch} for t in model.inputs} if isinstance(model.input, dict) else {0: batch}
    return {"dynamic_shapes": [(spec,)]}


def _feed_names(found, input_names):
    """Maps each contract input name to the artifact's input of that name (exporters decorate names)."""
    input_names = list(input_names)
    if len(found) == 1 and len(input_names) == 1:
        return {input_names[0]: found[0]}
    feeds = {}
    for name in input_names:
        bare = {f: f.split(":")[0] for f in found}
        matches = [f for f in found if f == name] or [f for f, b in bare.items() if b.endswith("_" + name)]
        if len(matches) != 1:
            raise ValueError(f"the artifact's inputs {found} do not name the model's input {name!r} exactly once")
        feeds[name] = matches[0]
    return feeds


def open_artifact(path, fmt, input_names, **kwargs):
    """A callable running the artifact: dict of arrays keyed by input name -> main output array.

    Args:
        path: the artifact (file, or folder for tf_saved_model).
        fmt: onnx | tf_saved_model | litert | torch.
        input_names: the contract's input names.
        **kwargs: runner options: dict_inputs (the model takes a dict, as every classifier here does; False for
            a one-tensor model such as the segmentation models), threads (onnx).
    """
    return RUNNERS[fmt](path, input_names, **kwargs)
