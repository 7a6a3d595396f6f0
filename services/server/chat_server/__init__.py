"""chat-server: the TCP chat server in front of an Ollama model."""

__version__ = "0.1.0"
