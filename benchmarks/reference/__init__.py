"""One module per reference repository for ``benchmarks/reference_equivalence.py`` (see its docstring)."""
