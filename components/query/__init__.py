"""Query strategies behind one interface, registered by name.

``select(name, model, pool, budget, seed) -> (ids, scores)``: ``pool`` is the unlabelled
target-train ``ImageSet`` (labels withheld); samples are named by ``sample_id``, never position.
Each strategy is one module that calls :func:`register`.
"""
from components.query.base import STRATEGIES, register, requirement_of, select
from components.query import (aada, badge, clue, clusters, random_choice,  # noqa: F401 (register)
                              sage, uncertainty)

__all__ = ["STRATEGIES", "register", "requirement_of", "select"]
