"""SAGE active domain adaptation: the pure, testable parts (no Prefect imports)."""
