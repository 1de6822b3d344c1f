"""Query strategies behind one interface, registered by name.

``select(name, pool, budget, seed) -> (ids, scores)``: ``pool`` is the unlabelled target-train
pool's ``PoolOutputs`` (features, probabilities, discriminator; computed once by the run);
samples are named by ``sample_id``, never position.
Each strategy is one module that calls :func:`register`.
"""
from components.query.base import STRATEGIES, PoolOutputs, register, requirement_of, select
from components.query import (aada, badge, clue, clusters, random_choice,  # noqa: F401 (register)
                              sage, uncertainty)

__all__ = ["STRATEGIES", "PoolOutputs", "register", "requirement_of", "select"]
