"""faults suite (see the module docstrings)."""
