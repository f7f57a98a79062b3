"""ingest: HTTP in (the tracking API, the webhook, what browsers need), the inbox, sorting."""
