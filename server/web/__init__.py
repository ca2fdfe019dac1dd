"""The web page beside the gRPC service: a thin HTTP layer over the same Explainer core."""

from .httpd import WebPage, start_web_page
from .tls import tls_context

__all__ = ["WebPage", "start_web_page", "tls_context"]
