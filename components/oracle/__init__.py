"""Oracles: who answers "what is the label of this target sample?".

One interface, so the simulated oracle (benchmarks, ``dvc repro``) and people in Label Studio
run the same code path: ``request(sample_ids, round) -> handle`` then
``collect(handle, timeout) -> {sample_id: label}``.
"""
from components.oracle.base import Oracle, OracleError, OracleTimeout
from components.oracle.simulated import SimulatedOracle

ORACLES = {"simulated": SimulatedOracle}

__all__ = ["ORACLES", "Oracle", "OracleError", "OracleTimeout", "SimulatedOracle"]
