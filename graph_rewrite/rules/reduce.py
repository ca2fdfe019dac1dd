"""Backward rules: reduce family (being written)."""

from __future__ import annotations
