"""`serve` on a real loopback server: every route, every bad input, the token, concurrency, the ONNX runtime and
the page in headless Chromium. The models are the tiny demo's (shared with the demo and report tests)."""

import base64
import io
import json
import os
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from skinkeras.config import ServeConfig
from skinkeras.serving import BackgroundServer, build_app
from skinkeras.serving.loadtest import multipart
from skinkeras.serving.server import check_exposure


def _jpeg(seed, size=(600, 450)):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (12, 16, 3)).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(small).resize(size, Image.BICUBIC).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _png(data_url):
    assert data_url.startswith("data:image/png;base64,")
    picture = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    picture.load()
    return picture


def request(url, fields=None, files=None, token=None, raw=None, content_type=None):
    """(status, JSON body) of a GET (no fields/files) or a multipart POST."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw
    if fields is not None or files is not None:
        data, content_type = multipart(fields or {}, files or {})
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as answer:
            body = answer.read()
            return answer.status, (json.loads(body) if answer.headers.get_content_type() == "application/json"
                                   else body.decode())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def demo_models(tiny_demo):
    demo, _ = tiny_demo
    return str(demo / "seg-train" / "best.keras"), str(demo / "cls-tdbn" / "best.keras")


@pytest.fixture(scope="module")
def server(demo_models):
    app, engine = build_app(ServeConfig(seg_model=demo_models[0], cls_model=demo_models[1], port=0),
                            echo=lambda *a: None)
    with BackgroundServer(app) as running:
        running.engine = engine
        yield running


def test_routes(server):
    status, health = request(server.url + "/api/health")
    assert status == 200 and health["status"] == "ok" and "keras" in health["runtime"]
    status, model = request(server.url + "/api/model")
    assert status == 200
    assert model["classification"]["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert model["classification"]["arch"] == "tdbn" and model["cams"] and model["metadata"]
    assert model["max_upload_mb"] == 20.0 and "back" in model["sites"] and "Research use only" in model["disclaimer"]
    status, schema = request(server.url + "/openapi.json")
    assert status == 200 and {"/api/predict", "/api/health", "/api/model"} <= set(schema["paths"])
    form = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"image", "age", "sex", "site"} and form["required"] == ["image"]
    status, docs = request(server.url + "/docs")
    assert status == 200 and "/api/predict" in docs and "https://" not in docs
    status, page = request(server.url + "/")
    assert status == 200 and "/api/predict" in page and "Research use only" in page
    assert "http://" not in page and "https://" not in page  # offline: no asset from the network
    status, missing = request(server.url + "/api/nothing")
    assert status == 404 and "error" in missing


def test_predict_answers_what_the_pipeline_computes(server, demo_models, tmp_path):
    from skinkeras.explain.predict import predict_image

    image = _jpeg(0)
    status, answer = request(server.url + "/api/predict", {"age": "55", "sex": "female", "site": "back"},
                             {"image": ("lesion.jpg", image)})
    assert status == 200, answer
    assert answer["image_size"] == [600, 450]
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-6
    assert list(answer["probabilities"].values()) == sorted(answer["probabilities"].values(), reverse=True)
    assert answer["metadata"] == {"age": 55.0, "sex": "female", "site": "posterior torso"}
    assert set(answer["cams"]) == {"original", "segmented"} and answer["referral"]["threshold"] is not None
    pictures = {name: _png(answer[name]) for name in ("mask", "segmented")}
    pictures.update({f"cam {b}": _png(url) for b, url in answer["cams"].items()})
    assert pictures["mask"].size == pictures["segmented"].size == (600, 450)
    assert all(p.size[0] > 0 for p in pictures.values())
    path = tmp_path / "lesion.jpg"
    path.write_bytes(image)
    local = predict_image(str(path), *demo_models, age=55, sex="female", site="back")
    assert local["probabilities"].keys() == answer["probabilities"].keys()
    np.testing.assert_allclose(list(local["probabilities"].values()), list(answer["probabilities"].values()),
                               atol=1e-5)
    assert local["referral"]["refer"] == answer["referral"]["refer"]


def _bomb():
    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, "PNG")  # 48 MP of zeros: 50 kB of PNG
    return buf.getvalue()


BAD = [
    ("not an image", {}, {"image": ("notes.txt", b"hello, not a picture")}, 415, "not an image"),
    ("truncated", {}, {"image": ("cut.jpg", _jpeg(1)[:3000])}, 400, "truncated"),
    ("decompression bomb", {}, {"image": ("bomb.png", _bomb())}, 413, "decompression bomb"),
    ("over the upload limit", {}, {"image": ("huge.jpg", b"\xff" * 21_000_000)}, 413, "over the limit of 20 MB"),
    ("unknown sex", {"sex": "robot"}, {"image": ("a.jpg", _jpeg(2))}, 422, "Unknown sex"),
    ("unknown site", {"site": "elbowpit"}, {"image": ("a.jpg", _jpeg(2))}, 422, "Unknown lesion site"),
    ("age over 120", {"age": "130"}, {"image": ("a.jpg", _jpeg(2))}, 422, "outside 0-120"),
    ("negative age", {"age": "-3"}, {"image": ("a.jpg", _jpeg(2))}, 422, "outside 0-120"),
    ("age not a number", {"age": "old"}, {"image": ("a.jpg", _jpeg(2))}, 422, "not a number"),
    ("no file field", {"age": "40"}, {}, 400, "no 'image' file field"),
    ("empty file", {}, {"image": ("empty.jpg", b"")}, 400, "empty"),
]


def test_bad_inputs_get_one_line_4xx_and_the_server_keeps_serving(server):
    for what, fields, files, status, words in BAD:
        got, body = request(server.url + "/api/predict", fields, files)
        assert got == status, (what, got, body)
        assert words in body["error"] and "\n" not in body["error"], (what, body)
    got, body = request(server.url + "/api/predict", raw=b"image=1", content_type="application/x-www-form-urlencoded")
    assert got == 415 and "multipart/form-data" in body["error"]
    got, body = request(server.url + "/api/predict", {}, {"image": ("fine.png", _jpeg(3))})
    assert got == 200 and body["predicted"] in body["probabilities"]
    assert request(server.url + "/api/health")[1]["errors"] >= len(BAD)


def test_concurrent_clients_get_their_own_answers(server):
    images = {seed: _jpeg(seed) for seed in (10, 11)}
    alone = {seed: request(server.url + "/api/predict", {}, {"image": ("x.jpg", img)})[1]
             for seed, img in images.items()}
    assert alone[10]["probabilities"] != alone[11]["probabilities"]
    together = {}

    def client(seed):
        together[seed] = request(server.url + "/api/predict", {}, {"image": ("x.jpg", images[seed])})

    threads = [threading.Thread(target=client, args=(seed,)) for seed in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in images:
        status, body = together[seed]
        assert status == 200
        np.testing.assert_allclose(list(body["probabilities"].values()), list(alone[seed]["probabilities"].values()),
                                   atol=1e-6)
        assert body["mask"] == alone[seed]["mask"]


def test_token(demo_models):
    app, _ = build_app(ServeConfig(seg_model=demo_models[0], cls_model=demo_models[1], token="s3cret"),
                       echo=lambda *a: None)
    with BackgroundServer(app) as running:
        for path in ("/api/health", "/api/model"):
            status, body = request(running.url + path)
            assert status == 401 and "Bearer" in body["error"]
            assert request(running.url + path, token="wrong")[0] == 401
            assert request(running.url + path, token="s3cret")[0] == 200
        assert request(running.url + "/api/predict", {}, {"image": ("a.jpg", _jpeg(4))})[0] == 401
        status, body = request(running.url + "/api/predict", {}, {"image": ("a.jpg", _jpeg(4))}, token="s3cret")
        assert status == 200 and body["probabilities"]
        assert request(running.url + "/")[0] == 200  # the page itself asks for the token


def test_exposure_needs_a_token_or_insecure(capsys):
    check_exposure("127.0.0.1", None, False)
    check_exposure("0.0.0.0", "t", False)
    with pytest.raises(ValueError, match="--token") as caught:
        check_exposure("0.0.0.0", None, False)
    assert "\n" not in str(caught.value)
    lines = []
    check_exposure("0.0.0.0", None, True, echo=lines.append)
    assert len(lines) == 1 and "nothing authenticates" in lines[0]


def test_cli_refuses_a_public_host_without_token(demo_models):
    from click.testing import CliRunner

    from cli import cli

    result = CliRunner().invoke(cli, ["serve", "--seg-model", demo_models[0], "--cls-model", demo_models[1],
                                      "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "--insecure" in result.output and len(result.output.strip().splitlines()) == 1


def test_onnx_runtime_serves_the_exported_models(tiny_demo, tmp_path, server):
    """--runtime onnx on the demo's exported segmentation and original-only models, against --runtime keras."""
    import keras

    from skinkeras.exporting import ExportError, export

    demo, _ = tiny_demo
    seg, cls = demo / "seg-train" / "best.keras", demo / "cls-original_only" / "best.keras"
    try:
        export(str(seg), "onnx", str(tmp_path / "seg-onnx"), echo=lambda *a: None)
        export(str(cls), "onnx", str(tmp_path / "cls-onnx"), echo=lambda *a: None)
    except ExportError as exc:
        pytest.skip(f"ONNX export under {keras.backend.backend()}: {exc}")
    image = _jpeg(5)
    answers = {}
    for runtime, (s, c) in {"onnx": (tmp_path / "seg-onnx", tmp_path / "cls-onnx"), "keras": (seg, cls)}.items():
        app, _ = build_app(ServeConfig(seg_model=str(s), cls_model=str(c), runtime=runtime), echo=lambda *a: None)
        with BackgroundServer(app) as running:
            status, answers[runtime] = request(running.url + "/api/predict", {"age": "40"},
                                               {"image": ("a.jpg", image)})
            assert status == 200, answers[runtime]
    onnx, reference = answers["onnx"], answers["keras"]
    assert list(onnx["probabilities"]) == list(reference["probabilities"])
    np.testing.assert_allclose(list(onnx["probabilities"].values()), list(reference["probabilities"].values()),
                               atol=1e-4)
    assert onnx["cams"] == {} and "--runtime keras" in onnx["cams_note"]
    assert onnx["referral"]["threshold"] == pytest.approx(reference["referral"]["threshold"])


def test_page_in_a_real_browser(server, tmp_path):
    """Headless Chromium loads the page, uploads a real image through the file input and shows the result."""
    from skinkeras.report.browser import check_page, find_browser

    if not find_browser():
        pytest.skip("no Chromium: install Debian's chromium")
    image = tmp_path / "lesion.jpg"
    image.write_bytes(_jpeg(6))
    _, reference = request(server.url + "/api/predict", {}, {"image": ("lesion.jpg", image.read_bytes())})

    def upload(page):
        page.wait_for("document.getElementById('site').options.length > 1")
        page.set_files("#file", [str(image)])
        page.evaluate("document.getElementById('run').click()")
        page.wait_for("document.body.dataset.done", timeout=120)
        return page.evaluate("""JSON.stringify({
            done: document.body.dataset.done,
            bars: Array.from(document.querySelectorAll('#bars .bar')).map(b => [b.dataset.cls, Number(b.dataset.p)]),
            refer: document.getElementById('refer').textContent,
            status: document.getElementById('status').textContent,
            model: document.getElementById('model').textContent})""")

    shot = tmp_path / "page.png"
    seen = check_page(server.url + "/", str(shot), timeout=180, interact=upload)
    result = json.loads(seen.interaction)
    assert result["done"] == "1", result["status"]
    bars = dict(result["bars"])
    assert abs(sum(bars.values()) - 1) < 1e-3
    assert list(bars) == list(reference["probabilities"])
    np.testing.assert_allclose(list(bars.values()), list(reference["probabilities"].values()), atol=1e-6)
    assert "tdbn" in result["model"] and result["refer"]
    assert not seen.console_errors, seen.console_errors
    assert not seen.broken_images, seen.broken_images
    assert {img["alt"] for img in seen.images} >= {"uploaded image", "predicted mask", "segmented lesion",
                                                  "Grad-CAM of the original branch"}
    assert all(u.startswith((server.url, "data:", "blob:")) for u in seen.requests), seen.requests
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10 and pixels.shape[0] > 400  # a page with content, not a blank screenshot


def test_load_test_counts_and_bounds(server, tmp_path):
    from skinkeras.serving.loadtest import load_test

    image = tmp_path / "a.jpg"
    image.write_bytes(_jpeg(7))
    rounds = load_test(server.url, str(image), clients=(1, 2), requests=4, seconds=120, warmup=0,
                       pid=os.getpid())
    assert [r["clients"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["requests"] == 4 and r["statuses"] == {"200": 4}
        assert 0 < r["p50_s"] <= r["p95_s"] <= r["max_s"] and r["requests_per_s"] > 0
        assert r["server_peak_mb"] > 100  # this process holds the server and its models
    bounded = load_test(server.url, str(image), clients=(1,), requests=1000, seconds=0.5, warmup=0)[0]
    assert 1 <= bounded["requests"] < 1000  # the time bound stops the round


def test_ctrl_c_stops_the_cli_server_cleanly(demo_models):
    """`python cli.py serve` in its own process: it answers, then SIGINT (Ctrl-C) ends it with exit 0."""
    import signal
    import subprocess
    import sys
    import time

    from skinkeras.serving.server import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "cli.py", "serve", "--seg-model", demo_models[0], "--cls-model",
                             demo_models[1], "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if request(f"http://127.0.0.1:{port}/api/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the server did not start")
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert f"Serving on http://127.0.0.1:{port}/" in output and "Stopped." in output
    assert "Traceback" not in output
