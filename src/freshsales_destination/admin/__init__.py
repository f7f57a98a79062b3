"""Operations: what the people who run the destination see and steer.

``views.py`` is the read model (one place that turns the store into answers), used alike by
the admin API (``api.py``), the dashboard (``dashboard.py``), the CLI and Prometheus metrics.
"""
