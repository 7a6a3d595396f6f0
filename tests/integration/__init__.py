"""Integration tests: the compose stack, built and started from the repository's own files."""
