"""Orchestration, tracking, registry and CLI around the pure steps in `components/`."""
