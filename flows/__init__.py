"""Prefect flows: thin orchestration over components."""
import os

# Before Prefect reads its settings (the CLI may import it first): no usage reports, and a
# temporary API server may take longer than Prefect's default 20 s on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
