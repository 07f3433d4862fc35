"""The local web application: a page and a JSON API for explainable prediction of one image (`serve`)."""

from skinkeras.serving.server import BackgroundServer, build_app, serve

__all__ = ["BackgroundServer", "build_app", "serve"]
