"""Experiments: what turns runs into claims (folds, ensembles, paired comparisons, paper tables).

These modules call :mod:`medseg.engine`; the engine never imports them.
"""
