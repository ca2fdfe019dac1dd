"""Backward rules: pooling family (being written)."""

from __future__ import annotations
