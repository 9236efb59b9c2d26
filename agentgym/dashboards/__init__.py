"""Reports, metrics and (later) dashboards over the store."""
