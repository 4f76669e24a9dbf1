"""``service stats { inet_listener http { } }``: ``GET /metrics`` for Prometheus."""
