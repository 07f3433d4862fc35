"""The models a server holds: loaded once, then one call per uploaded image.

`KerasEngine` runs the `.keras` models through the same `explain_image` that `predict` uses (Grad-CAM
included); `OnnxEngine` runs two folders written by `export --format onnx` in onnxruntime, with the classes,
metadata encoding, temperature and referral thresholds their `model.json` carries (no gradients, so no CAMs).
"""

import io
import os
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from skinkeras.names import CLASSIFICATION, METADATA, ORIGINAL, SEGMENTATION, SEGMENTED


class BadInput(ValueError):
    """A request the server refuses with a 4xx: the message is one line naming the problem.

    Args:
        message: the line.
        status: the HTTP status (400, 413, 415, 422).
    """

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def decode_upload(data, max_pixels, name="image"):
    """uint8 (H, W, 3) RGB of an uploaded file, checked before it is decoded in full.

    Args:
        data: the file's bytes.
        max_pixels: largest width x height accepted (a decompression bomb is refused from its header).
        name: what the message calls the file.

    Raises:
        BadInput: empty, not an image, too many pixels, or truncated.
    """
    from skinkeras.data.pipeline import to_uint8_rgb

    if not data:
        raise BadInput(f"{name} is empty: upload a JPEG or PNG dermoscopic image")
    try:
        img = Image.open(io.BytesIO(data))
    except Exception:
        raise BadInput(f"{name} is not an image this server can read: upload a JPEG or PNG", 415) from None
    width, height = img.size
    if width * height > max_pixels:
        raise BadInput(f"{name} is {width}x{height} pixels, more than the limit of {max_pixels:,} "
                       "(a decompression bomb, or a scan to downsize first)", 413)
    try:
        img.load()
        return to_uint8_rgb(img)
    except Exception as exc:
        reason = (str(exc).splitlines() or [exc.__class__.__name__])[0][:120]
        raise BadInput(f"{name} cannot be decoded ({reason}): the file is truncated or damaged") from None


def png_bytes(array):
    """PNG encoding of a uint8 (H, W[, 3]) array."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Result:
    """What the server answers for one image.

    Args:
        report: probabilities, predicted class, referral, calibration line, ...
        mask: bool (H, W) at the image's size.
        segmented: uint8 (H, W, 3).
        cams: branch -> uint8 overlay at the classifier's size (empty without gradients).
    """

    report: dict
    mask: np.ndarray
    segmented: np.ndarray
    cams: dict


class KerasEngine:
    """The `.keras` models of a seg-train and a cls-train run, with Grad-CAM.

    Args:
        seg_model: segmentation `.keras`.
        cls_model: RUN/best.keras of cls-train.
        method: gradcam | layercam.
    """

    runtime = "keras"

    def __init__(self, seg_model, cls_model, method="gradcam"):
        import keras

        from skinkeras.inference import load_cls_run, load_model
        from skinkeras.models.contract import contract_of
        from skinkeras.runs import git_commit

        from skinkeras.explain.gradcam import cam_targets

        self.method = method
        self.seg = load_model(seg_model, task=SEGMENTATION)
        self.run = load_cls_run(cls_model)
        # built once: each build clones the model, which cost most of a request when done per call
        self.targets = cam_targets(self.run.model)
        self.encoder = self.run.encoder
        self.metadata = METADATA in self.run.contract.inputs
        self.info = {
            "runtime": f"keras ({keras.backend.backend()} backend)",
            "segmentation": {"file": os.path.abspath(seg_model), "name": self.seg.name,
                             "arch": contract_of(self.seg).arch},
            "classification": {"file": self.run.path, "run": self.run.dir, "arch": self.run.cfg.arch,
                               "encoder": self.run.cfg.encoder, "image_size": self.run.cfg.image_size,
                               "dataset": self.run.cfg.dataset, "classes": list(self.run.classes),
                               "contract": self.run.contract.to_dict()},
            "calibration": self.run.calibration_note,
            "run_commit": _run_commit(self.run.dir),
            "server_commit": git_commit(),
            "cams": True,
        }

    def __call__(self, image, age=None, sex=None, site=None, refer_at=0.90):
        from skinkeras.explain.predict import explain_image

        done = explain_image(image, self.seg, self.run, age, sex, site, method=self.method, refer_at=refer_at,
                             targets=self.targets)
        return Result(done.report, done.mask, done.segmented, done.cams)


class OnnxEngine:
    """Two folders written by `export --format onnx`, run in onnxruntime (probabilities and mask, no CAMs).

    Args:
        seg_dir: exported segmentation folder.
        cls_dir: exported classifier folder (its model.json holds the classes, encoding and calibration).
        threads: onnxruntime intra-op threads (None: every core).
    """

    runtime = "onnx"

    def __init__(self, seg_dir, cls_dir, threads=None):
        from skinkeras.data.metadata import MetadataEncoder
        from skinkeras.exporting.artifacts import read_sidecar
        from skinkeras.exporting.runtimes import open_artifact
        from skinkeras.inference import ClsRun
        from skinkeras.runs import git_commit

        self.seg_info, seg_path = _sidecar(read_sidecar, seg_dir, SEGMENTATION)
        self.cls_info, cls_path = _sidecar(read_sidecar, cls_dir, CLASSIFICATION)
        self.seg = open_artifact(seg_path, "onnx", self.seg_info["contract"]["inputs"],
                                 dict_inputs=self.seg_info.get("input_structure") == "dict", threads=threads)
        self.cls = open_artifact(cls_path, "onnx", self.cls_info["contract"]["inputs"],
                                 dict_inputs=self.cls_info.get("input_structure") == "dict", threads=threads)
        self.seg_size = tuple(self.seg_info["inputs"][0]["shape"][1:3])
        image_input = next(i for i in self.cls_info["inputs"] if len(i["shape"]) == 4)
        self.cls_size = tuple(image_input["shape"][1:3])
        self.inputs = tuple(self.cls_info["contract"]["inputs"])
        self.metadata = METADATA in self.inputs
        self.encoder = MetadataEncoder.from_dict(self.cls_info["metadata_encoder"])
        calibration = self.cls_info.get("calibration")
        note = (f"calibrated probabilities: temperature {calibration['temperature']:.3f} from {cls_dir}/model.json"
                if calibration else self.cls_info.get("calibration_note", "raw probabilities"))
        self.run = ClsRun(None, None, tuple(self.cls_info["classes"]), self.encoder, self.cls_info.get("run"),
                          cls_path, calibration, note)
        self.info = {
            "runtime": "onnxruntime",
            "segmentation": {"folder": os.path.abspath(seg_dir), "arch": self.seg_info.get("arch"),
                             "parity": self.seg_info.get("parity")},
            "classification": {"folder": os.path.abspath(cls_dir), "run": self.cls_info.get("run"),
                               "arch": self.cls_info.get("arch"), "encoder": self.cls_info.get("encoder"),
                               "image_size": self.cls_size[0], "dataset": self.cls_info.get("dataset"),
                               "classes": list(self.cls_info["classes"]), "contract": self.cls_info["contract"],
                               "parity": self.cls_info.get("parity")},
            "calibration": note,
            "run_commit": self.cls_info.get("run_commit"),
            "server_commit": git_commit(),
            "cams": False,
        }

    def __call__(self, image, age=None, sex=None, site=None, refer_at=0.90):
        from skinkeras.data.metadata import sample_availability
        from skinkeras.data.pipeline import resize_rgb
        from skinkeras.data.segdir import segmented_image
        from skinkeras.explain.predict import ranked_report
        from skinkeras.inference import probability_to_mask
        from skinkeras.names import METADATA_MASK

        prob = self.seg({self.seg_info["contract"]["inputs"][0]: resize_rgb(image, self.seg_size)[None]})
        mask = probability_to_mask(prob.reshape(prob.shape[:3])[0], image.shape[:2])
        segmented = segmented_image(image, mask)
        features, avail = self.encoder.encode_one(age, sex, site)
        feed = {ORIGINAL: resize_rgb(image, self.cls_size)[None], SEGMENTED: resize_rgb(segmented, self.cls_size)[None],
                METADATA: features, METADATA_MASK: sample_availability(avail)}
        raw = self.cls({k: v for k, v in feed.items() if k in self.inputs})
        probs = self.run.calibrated(raw)[0]
        report = {**ranked_report(probs, self.run.classes, self.run.calibration_note,
                                  self.run.referral_threshold(float(refer_at)), refer_at),
                  "tta": {"mode": "none", "spread": 0.0}, "explained_class": None,
                  "metadata_available": bool(avail.any()) and self.metadata,
                  "lesion_fraction": float(mask.mean()), "cam_method": None}
        return Result(report, mask, segmented, {})


def _sidecar(read_sidecar, folder, task):
    info, path = read_sidecar(folder)
    if info.get("format") != "onnx":
        raise ValueError(f"{folder} holds a {info.get('format')} artifact; --runtime onnx needs "
                         f"`python cli.py export --format onnx`")
    if info.get("task") != task:
        raise ValueError(f"{folder} holds a {info.get('task')} model; this needs the {task} model's export")
    if task == CLASSIFICATION and "classes" not in info:
        raise ValueError(f"{folder}/model.json has no classes: export RUN/best.keras from a cls-train run folder")
    return info, path


def _run_commit(run_dir):
    from skinkeras import runs

    path = os.path.join(run_dir, "env.json")
    return runs.read_json(path).get("git_commit") if os.path.isfile(path) else None


def load_engine(runtime, seg_model, cls_model, method="gradcam"):
    """The engine of `runtime` (keras | onnx), its models loaded.

    Args:
        runtime: keras | onnx.
        seg_model: segmentation model (.keras, or exported folder for onnx).
        cls_model: classifier (RUN/best.keras, or exported folder for onnx).
        method: CAM method (keras).
    """
    if runtime == "onnx":
        return OnnxEngine(seg_model, cls_model)
    return KerasEngine(seg_model, cls_model, method)


class Serialised:
    """Calls an engine one request at a time (the models and Grad-CAM's clones are not shared across threads).

    Args:
        engine: the engine.
    """

    def __init__(self, engine):
        self.engine = engine
        self.lock = threading.Lock()

    def __getattr__(self, name):  # what the app reads besides the call (info, metadata) is the engine's
        return getattr(self.engine, name)

    def __call__(self, *args, **kwargs):
        with self.lock:
            return self.engine(*args, **kwargs)
