"""The web page beside the gRPC service: a thin HTTP layer over the same Explainer core."""

from .httpd import WebPage, start_web_page

__all__ = ["WebPage", "start_web_page"]
