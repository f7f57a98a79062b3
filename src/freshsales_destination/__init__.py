"""freshsales-destination: Segment-compatible ingest, durable queue and Freshsales delivery."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
