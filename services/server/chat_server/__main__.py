"""``python -m chat_server``: the same as the ``chat-server`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
