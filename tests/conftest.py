"""Shared pytest configuration: fixture modules live in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.standin",
    "tests.fixtures.server",
    "tests.fixtures.llamacpp",
    "tests.fixtures.postgres",
]
