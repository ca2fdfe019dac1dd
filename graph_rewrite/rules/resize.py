"""Backward rules: resize family (being written)."""

from __future__ import annotations
