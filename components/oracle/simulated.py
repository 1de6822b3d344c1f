"""Simulated oracle: answers from the manifest's held-back target-train labels."""
from __future__ import annotations

import pandas as pd

from components.oracle.base import OracleError


class SimulatedOracle:
    """Ground truth stands in for annotators. Counts what it was asked, for audits and tests."""

    def __init__(self, manifest: pd.DataFrame):
        pool = manifest[manifest["split"] == "target_train"]
        self._labels = dict(zip(pool["sample_id"], pool["label"].astype(str)))
        self.asked: list[str] = []

    def request(self, sample_ids: list[str], round: int, context: dict | None = None) -> dict:
        unknown = [s for s in sample_ids if s not in self._labels]
        if unknown:
            raise OracleError(f"samples {unknown[:5]} are not in the target-train pool; only "
                              "target-train samples can be annotated")
        return {"round": round, "sample_ids": list(sample_ids)}

    def collect(self, handle: dict, timeout: float) -> dict[str, str]:
        self.asked.extend(handle["sample_ids"])
        return {sid: self._labels[sid] for sid in handle["sample_ids"]}
