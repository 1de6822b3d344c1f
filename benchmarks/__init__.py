"""Benchmark scripts; ``benchmarks.protocol`` is the reproduction protocol they share.

A regular package (not a namespace one), so ``import benchmarks.protocol`` finds this folder
from the repository root even where an installed distribution ships its own ``benchmarks``.
"""
