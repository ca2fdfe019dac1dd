"""Backward rules: elementwise family (being written)."""

from __future__ import annotations
