"""chat-client: the terminal client of the chat service."""

__version__ = "0.1.0"
