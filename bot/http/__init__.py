"""The HTTP server: webhooks behind bearer tokens and size limits, /healthz, /readyz, /metrics.

Shared infrastructure: it knows no capability; each feature hands it its hook handlers.
"""
