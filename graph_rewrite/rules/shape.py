"""Backward rules: shape family (being written)."""

from __future__ import annotations
