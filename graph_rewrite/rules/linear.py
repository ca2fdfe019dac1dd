"""Backward rules: linear family (being written)."""

from __future__ import annotations
