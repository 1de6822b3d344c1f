"""Query strategies behind one interface, registered by name.

``select(name, pool, budget, seed) -> (ids, scores)``: ``pool`` is the unlabelled target-train
pool's ``PoolOutputs`` (features, probabilities, discriminator; computed once by the run);
samples are named by ``sample_id``, never position.
Each strategy is one module that calls :func:`register`.
"""
import importlib
import pkgutil

from components.query.base import STRATEGIES, PoolOutputs, register, requirement_of, select

for _module in pkgutil.iter_modules(__path__):   # each module registers its strategies: a new
    importlib.import_module(f"{__name__}.{_module.name}")   # one is one file, nothing else

__all__ = ["STRATEGIES", "PoolOutputs", "register", "requirement_of", "select"]
