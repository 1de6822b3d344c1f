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


def check_labels(requested: list[str], labels: dict[str, str],
                 classes: list[str]) -> dict[str, str]:
    """What any oracle's answer must be before a run keeps it: a class of ``classes`` for a
    requested sample. Returns the labels in request order (as ``str``)."""
    unknown = {s: l for s, l in labels.items() if str(l) not in classes}
    if unknown:
        raise OracleError(f"labels outside the class list for {unknown}; allowed: "
                          f"{classes}. Correct them in the annotation tool and collect again.")
    extra = set(labels) - set(requested)
    if extra:
        raise OracleError(f"labels for samples that were not requested: {sorted(extra)[:5]}")
    return {s: str(labels[s]) for s in requested if s in labels}


def wait_over(deadline: float | None, now: float | None = None) -> bool:
    """Whether a wait with this ``deadline`` (epoch seconds; None: no end) has timed out: the
    run then collects what there is (``on_timeout``), and the receiver resumes it to do so."""
    import time

    return deadline is not None and (time.time() if now is None else now) >= deadline
