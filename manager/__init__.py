"""The manager: one Docker Engine API endpoint for the whole cluster (see docs/architecture.md)."""
