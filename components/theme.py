"""Shared look: the stylesheet injected into panes (Panel renders them in shadow DOM)."""
from __future__ import annotations

from pathlib import Path

CSS = (Path(__file__).resolve().parent.parent / "static" / "app.css").read_text()
