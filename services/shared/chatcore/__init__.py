"""Code shared by the chat server and the chat client: the wire protocol codec
(:mod:`chatcore.protocol`) and the personal-data detector (:mod:`chatcore.privacy`)."""

__version__ = "0.1.0"
