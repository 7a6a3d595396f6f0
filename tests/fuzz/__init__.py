"""fuzz suite (see the module docstrings)."""
