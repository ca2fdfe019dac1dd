"""Backward rules: normalization family (being written)."""

from __future__ import annotations
