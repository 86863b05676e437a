"""The evaluator: designs scored as consumers against ``exact``, sweeps, results storage."""
