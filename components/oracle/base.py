"""The oracle interface."""
from __future__ import annotations

from typing import Any, Protocol


class OracleError(RuntimeError):
    """The oracle cannot answer (bad label, unknown sample, server down); says what to do."""


class OracleTimeout(OracleError):
    """No complete answer within the timeout; the request stays open and can be collected later."""


class Oracle(Protocol):
    def request(self, sample_ids: list[str], round: int, context: dict | None = None) -> Any:
        """Ask for labels; returns a handle that can be persisted (JSON-serialisable).

        ``context`` may give, per sample, its path, query score and the model's guess.
        """

    def collect(self, handle: Any, timeout: float) -> dict[str, str]:
        """Wait for and return ``{sample_id: class name}``; raises OracleTimeout."""
