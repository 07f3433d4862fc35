"""`serve`: the checks before binding, the models loaded once, and uvicorn."""

import ipaddress
import os
import socket
import threading
import time

TOKEN_ENV = "SKINKERAS_TOKEN"


def is_local(host):
    """Whether `host` binds the loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host, token, insecure, echo=print):
    """Refuses a non-local bind without a token unless `insecure`, and then says nothing authenticates.

    Args:
        host: the bind address.
        token: the bearer token, or None.
        insecure: the user's --insecure.
        echo: printer of the warning line.
    """
    if is_local(host) or token:
        return
    if not insecure:
        raise ValueError(f"--host {host} exposes the server beyond this machine: give --token (or set {TOKEN_ENV}), "
                         "or --insecure to serve without authentication")
    echo(f"WARNING: serving on {host} without a token: nothing authenticates requests (--insecure)")


def build_app(cfg, echo=print):
    """(FastAPI app, engine) of a `ServeConfig`: checks the exposure, loads the models once.

    Args:
        cfg: `ServeConfig`.
        echo: printer.
    """
    from skinkeras.serving.app import create_app
    from skinkeras.serving.engine import Serialised, load_engine
    from skinkeras.trust.referral import parse_targets

    token = cfg.token or os.environ.get(TOKEN_ENV) or None
    check_exposure(cfg.host, token, cfg.insecure, echo)
    if cfg.keep_uploads:
        os.makedirs(cfg.keep_uploads, exist_ok=True)
    begin = time.perf_counter()
    engine = load_engine(cfg.runtime, cfg.seg_model, cfg.cls_model, cfg.method)
    echo(f"Loaded the models in {time.perf_counter() - begin:.1f} s ({engine.info['runtime']}); "
         f"{engine.info['calibration']}")
    # Keras models (and Grad-CAM's clones of them) are called from one thread at a time; more workers are an
    # onnxruntime option (its sessions are thread-safe).
    shared = engine if (cfg.runtime == "onnx" and cfg.workers > 1) else Serialised(engine)
    app = create_app(shared, token=token, max_upload_mb=cfg.max_upload_mb, max_pixels=cfg.max_pixels,
                     refer_at=parse_targets(cfg.refer_at)[0], keep_uploads=cfg.keep_uploads, workers=cfg.workers)
    return app, engine


def serve(seg_model, cls_model=None, echo=print, **options):
    """Serves the page and the API until Ctrl-C (the API of `python cli.py serve`).

    Args:
        seg_model: segmentation model (.keras, or an exported folder with runtime="onnx"), or a `ServeConfig`.
        cls_model: classifier (RUN/best.keras, or an exported folder with runtime="onnx").
        echo: printer.
        **options: more `ServeConfig` fields (runtime, host, port, token, ...).
    """
    import uvicorn

    from skinkeras.config import ServeConfig

    cfg = seg_model if isinstance(seg_model, ServeConfig) else ServeConfig(
        seg_model=os.fspath(seg_model), cls_model=os.fspath(cls_model), **options)
    app, _ = build_app(cfg, echo)
    port = cfg.port or free_port(cfg.host)
    echo(f"Serving on http://{cfg.host}:{port}/ (API documentation: /docs); Ctrl-C stops")
    uvicorn.run(app, host=cfg.host, port=port, log_level="warning", access_log=False)
    echo("Stopped.")


def free_port(host="127.0.0.1"):
    """A TCP port free on `host` now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BackgroundServer:
    """uvicorn serving `app` from a thread (tests, load tests, notebooks); `stop()` shuts it down cleanly.

    Args:
        app: the ASGI app.
        host: bind address.
        port: port (0: a free one).
    """

    def __init__(self, app, host="127.0.0.1", port=0):
        import uvicorn

        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout=30):
        self.thread.start()
        deadline = time.time() + timeout
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
