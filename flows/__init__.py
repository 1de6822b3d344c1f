"""Prefect flows: thin orchestration over components."""
