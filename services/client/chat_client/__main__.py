"""``python -m chat_client``: the same as the ``chat-client`` command."""

import sys

from .cli import main

sys.exit(main())
