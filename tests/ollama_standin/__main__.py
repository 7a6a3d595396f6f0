"""``python -m ollama_standin``: command line (flags, or STANDIN_* environment variables)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from .server import Config, serve


def parse_args(argv: list[str] | None = None) -> Config:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="ollama_standin", description=__doc__)
    p.add_argument("--host", default=env("STANDIN_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("STANDIN_PORT", "11434")),
                   help="0 picks a free port (read it from the Listening line)")
    p.add_argument("--models", default=env("STANDIN_MODELS", "llama3.2"),
                   help="comma-separated models present at start ('' for none)")
    p.add_argument("--tokens", type=int, default=int(env("STANDIN_TOKENS", "20")),
                   help="tokens per answer (the echo is padded with filler words)")
    p.add_argument("--delay-ms", type=float, default=float(env("STANDIN_DELAY_MS", "0")),
                   help="delay before each token")
    p.add_argument("--pull-seconds", type=float,
                   default=float(env("STANDIN_PULL_SECONDS", "1.0")),
                   help="how long a pull's progress takes")
    p.add_argument("--version", default=env("STANDIN_VERSION", "0.12.6"),
                   help="what /api/version reports")
    p.add_argument("--api-key", default=env("STANDIN_API_KEY") or None,
                   help="require this bearer token on the OpenAI-compatible /v1 endpoints")
    a = p.parse_args(argv)
    models = tuple(m.strip() for m in a.models.split(",") if m.strip())
    return Config(host=a.host, port=a.port, models=models, tokens=a.tokens,
                  delay_ms=a.delay_ms, pull_seconds=a.pull_seconds, version=a.version,
                  api_key=a.api_key)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        asyncio.run(serve(config))
    except OSError as exc:  # e.g. the port is taken
        print(f"Error: listen tcp {config.host}:{config.port}: {exc.strerror or exc}",
              file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
