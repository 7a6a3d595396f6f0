"""hostile suite (see the module docstrings)."""
