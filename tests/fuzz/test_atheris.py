"""
Runs the atheris harness (``atheris_codec.py``) for a few seconds, seeded with
valid v1 and v2 sessions. Skipped when atheris is not installed (it is
a test dependency on Linux x86_64).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_codec_fuzz import (
    client_v1_session,
    client_v2_session,
    server_v1_session,
    server_v2_session,
)

HARNESS = Path(__file__).with_name("atheris_codec.py")
REPO = Path(__file__).resolve().parents[2]
#: Seconds of fuzzing per test run; FUZZ_SECONDS overrides it for longer runs.
SECONDS = int(os.environ.get("FUZZ_SECONDS", "10"))


def test_atheris_finds_no_crash_in_the_codec(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = ["hello", "a longer message with some words", "caf\u00e9 \u2014 ok"]
    # First byte picks the side (see atheris_codec.py), then no cuts.
    seeds = {
        "server_v2": b"\x00\x00" + client_v2_session(texts),
        "server_v1": b"\x00\x00" + client_v1_session(texts),
        "client_v2": b"\x01\x00" + server_v2_session(texts),
        "client_v1": b"\x02\x00" + server_v1_session(["hello", "ascii only"]),
    }
    for name, data in seeds.items():
        (corpus / name).write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, str(HARNESS), str(corpus), f"-max_total_time={SECONDS}",
         "-rss_limit_mb=2048", "-max_len=8192", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=SECONDS + 120, cwd=tmp_path, env=env,
    )
    output = r.stdout + r.stderr
    crashes = list(tmp_path.glob("crash-*")) + list(tmp_path.glob("timeout-*"))
    assert r.returncode == 0 and not crashes, f"atheris found a problem:\n{output[-6000:]}"
    assert "Done" in output, output[-3000:]  # libFuzzer's closing line: it really ran
