"""The web application: the page, its JSON API, the bearer token, upload limits and one-line 4xx answers.

FastAPI (on Starlette) because it documents the API from the routes themselves (`/openapi.json`, rendered
offline at `/docs`) and runs under uvicorn, the ecosystem's default ASGI server. The multipart body is read
into memory under the upload limit and parsed by the standard library's email parser, so an upload is never
spooled to disk (Starlette's own form parser spools files over 1 MB to a temporary file).
"""

import base64
import email.parser
import email.policy
import hmac
import html
import math
import os
import time
from importlib import resources

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from skinkeras.names import SEGMENTED
from skinkeras.serving.engine import BadInput, decode_upload, png_bytes

API_PREFIX = "/api/"
FORM_FIELDS = ("image", "age", "sex", "site")

PREDICT_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary",
                      "description": "dermoscopic image, JPEG or PNG, any size (limits in GET /api/model)"},
            "age": {"type": "number", "minimum": 0, "maximum": 120, "description": "years (omit if unknown)"},
            "sex": {"type": "string", "enum": ["male", "female"], "description": "omit if unknown"},
            "site": {"type": "string", "description": "anatomical site (GET /api/model lists the names)"},
        }}}},
}
PREDICT_ANSWER = {
    "200": {"description": "probabilities (class -> probability, highest first), predicted class, referral "
                           "flag, calibration line, and PNG images as data URLs: mask, segmented, cams "
                           "(branch -> overlay)"},
    "400": {"description": "a bad or missing field, or an undecodable image: {\"error\": one line}"},
    "401": {"description": "missing or wrong bearer token"},
    "413": {"description": "larger than the upload limit, or more pixels than the limit"},
    "415": {"description": "not multipart/form-data, or the file is not an image"},
    "422": {"description": "an unknown sex or site, an age outside 0-120"},
}


def error(status, message):
    """A JSON `{"error": message}` answer with `status`."""
    return JSONResponse({"error": message}, status_code=status)


def data_url(png):
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def parse_multipart(body, content_type):
    """Form fields of a multipart/form-data body held in memory: name -> (bytes, filename or None).

    Args:
        body: the request body.
        content_type: its Content-Type header (with the boundary).

    Raises:
        BadInput: not multipart/form-data, or not parsable.
    """
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise BadInput("send the image as multipart/form-data (an 'image' file field; age, sex, site optional)",
                       415)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    fields = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_payload(decode=True) or b"", part.get_filename())
    return fields


def parse_metadata(fields):
    """(age, sex, site) of the form, each None when not given; bad values raise a 422 line.

    Args:
        fields: from `parse_multipart`.
    """
    from skinkeras.data.metadata import normalize_sex, normalize_site

    def text(name):
        value = fields.get(name, (b"", None))[0].decode("utf-8", "replace").strip()
        return value or None

    age, sex, site = text("age"), text("sex"), text("site")
    if age is not None:
        try:
            age = float(age)
        except ValueError:
            raise BadInput(f"age {age!r} is not a number: give years between 0 and 120, or leave it empty",
                           422) from None
        if not (math.isfinite(age) and 0 <= age <= 120):
            raise BadInput(f"age {age:g} is outside 0-120 years: give a plausible age, or leave it empty", 422)
    try:
        sex = normalize_sex(sex) or None
        site = normalize_site(site) or None
    except ValueError as exc:
        raise BadInput(str(exc).splitlines()[0], 422) from None
    return age, sex, site


async def read_body(request, limit):
    """The request body, refused with 413 when it passes `limit` bytes; nothing past the limit is kept.

    The rest of an oversized body is still read (and dropped), up to four times the limit, so the client gets
    the 413 line instead of a reset connection; beyond that the connection is closed.
    """
    declared = request.headers.get("content-length")
    too_big = None
    if declared and declared.isdigit() and int(declared) > limit:
        too_big = f"the upload is {int(declared) / 1e6:.1f} MB, over the limit of {limit / 1e6:g} MB"
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if too_big or size > limit:
            too_big = too_big or f"the upload is over the limit of {limit / 1e6:g} MB"
            if size > 4 * limit:
                break
            continue
        chunks.append(chunk)
    if too_big:
        raise BadInput(too_big, 413)
    return b"".join(chunks)


def create_app(engine, token=None, max_upload_mb=20.0, max_pixels=40_000_000, refer_at=0.90, keep_uploads=None,
               workers=1):
    """The FastAPI application around a loaded engine.

    Args:
        engine: `KerasEngine` or `OnnxEngine` (loaded once, here).
        token: bearer token every /api/ route requires (None: open).
        max_upload_mb: largest request body.
        max_pixels: largest image (width x height).
        refer_at: the target accuracy of the referral threshold.
        keep_uploads: folder each uploaded image is written to (None: kept in memory only).
        workers: requests computed at once; more wait for a slot (1: one model call at a time).
    """
    from skinkeras.data.metadata import SEXES, valid_site_names

    app = FastAPI(title="skinkeras", version=_version(), docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="Explainable skin-lesion prediction of one dermoscopic image: lesion mask, class "
                              "probabilities, Grad-CAM and the referral flag. For research use only; not a "
                              "medical device.")
    limit = int(max_upload_mb * 1e6)
    slots = anyio.CapacityLimiter(workers)
    started = time.time()
    served = {"requests": 0, "errors": 0}

    @app.middleware("http")
    async def bearer_token(request: Request, call_next):
        if token and request.url.path.startswith(API_PREFIX):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error(401, "this server needs its token: send 'Authorization: Bearer TOKEN'")
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(BadInput)
    async def bad_input(request, exc):
        served["errors"] += 1
        return error(exc.status, str(exc))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse(resources.files("skinkeras.serving").joinpath("page.html").read_text("utf-8"))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs():
        return HTMLResponse(render_docs(app.openapi()))

    @app.get("/api/health", summary="Liveness: the models are loaded and the server answers")
    def health():
        return {"status": "ok", "runtime": engine.info["runtime"], "uptime_s": round(time.time() - started, 1),
                **served}

    @app.get("/api/model", summary="The loaded models: contract, classes, calibration, run and commit")
    def model():
        return {**engine.info, "refer_at": float(refer_at), "max_upload_mb": max_upload_mb,
                "max_pixels": max_pixels, "metadata": engine.metadata, "sexes": list(SEXES),
                "sites": valid_site_names(), "token_required": bool(token),
                "disclaimer": "Research use only. Not a medical device; not for diagnosis."}

    @app.post("/api/predict", summary="Segment, classify and explain one image",
              openapi_extra={"requestBody": PREDICT_BODY}, responses=PREDICT_ANSWER)
    async def predict(request: Request):
        body = await read_body(request, limit)
        fields = parse_multipart(body, request.headers.get("content-type", ""))
        if "image" not in fields:
            raise BadInput("no 'image' file field: send the image as multipart/form-data field 'image'")
        data, filename = fields["image"]
        image = decode_upload(data, max_pixels, f"image {filename!r}" if filename else "image")
        age, sex, site = parse_metadata(fields)
        if keep_uploads:
            os.makedirs(keep_uploads, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            with open(os.path.join(keep_uploads, f"{stamp}-{served['requests']:06d}.bin"), "wb") as f:
                f.write(data)
        begin = time.perf_counter()
        try:
            result = await anyio.to_thread.run_sync(lambda: engine(image, age, sex, site, refer_at), limiter=slots)
        except ValueError as exc:  # what the pipeline refuses (an unknown site spelled another way) is the input's
            raise BadInput(str(exc).splitlines()[0], 422) from None
        served["requests"] += 1
        report = result.report
        return {
            **report,
            "image_size": [int(image.shape[1]), int(image.shape[0])],
            "metadata": {"age": age, "sex": sex, "site": site},
            "mask": data_url(png_bytes(result.mask.astype("uint8") * 255)),
            SEGMENTED: data_url(png_bytes(result.segmented)),
            "cams": {branch: data_url(png_bytes(cam)) for branch, cam in result.cams.items()},
            "cams_note": None if engine.info["cams"] else "Grad-CAM needs gradients: serve with --runtime keras",
            "seconds": round(time.perf_counter() - begin, 3),
        }

    return app


def render_docs(schema):
    """An offline HTML page of the OpenAPI schema (FastAPI's /docs would load Swagger UI from a CDN)."""
    rows = []
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {})
            fields = ""
            for kind, spec in body.items():
                props = spec.get("schema", {}).get("properties", {})
                fields = f"<p>{html.escape(kind)}</p><ul>" + "".join(
                    f"<li><code>{html.escape(n)}</code>: {html.escape(p.get('description', p.get('type', '')))}</li>"
                    for n, p in props.items()) + "</ul>"
            answers = "".join(f"<li><code>{c}</code> {html.escape(r.get('description', ''))}</li>"
                              for c, r in op.get("responses", {}).items())
            rows.append(f"<section><h2><code>{method.upper()} {html.escape(path)}</code></h2>"
                        f"<p>{html.escape(op.get('summary', ''))}</p>{fields}<ul>{answers}</ul></section>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(schema['info']['title'])} API"
            f"</title><style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}code{{background:#eee}}"
            f"</style></head><body><h1>{html.escape(schema['info']['title'])} API {schema['info']['version']}</h1>"
            f"<p>{html.escape(schema['info'].get('description', ''))}</p><p>Schema: <a href='/openapi.json'>"
            f"/openapi.json</a>. With a token, send <code>Authorization: Bearer TOKEN</code>.</p>"
            + "".join(rows) + "</body></html>")


def _version():
    from skinkeras import __version__

    return __version__


__all__ = ["create_app", "parse_multipart", "render_docs"]
