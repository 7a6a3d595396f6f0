"""Load benchmarks of chat-server against the Ollama API stand-in (see bench/README.md)."""
