"""Observability: Prometheus metrics (metrics.py) and log set-up (logs.py)."""
