"""The DuckDB store: schema, the batched writer, shared read queries."""
