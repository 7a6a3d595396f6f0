"""Container healthcheck: exit 0 when ``GET /`` answers 200 (replaces ``ollama list``).

Usage: ``python3 healthcheck.py [URL]``; the default is
``http://127.0.0.1:$STANDIN_PORT/`` (port 11434). Stdlib only, so it also runs
as a plain script outside the package.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else f"http://127.0.0.1:{os.environ.get('STANDIN_PORT', '11434')}/"
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
        with opener.open(url, timeout=3) as resp:
            return 0 if resp.status == 200 else 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
