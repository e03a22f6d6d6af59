"""Placeholder: filled in by its implementer."""

from __future__ import annotations

__all__: list[str] = []
