"""Replicas that share one data volume (docker-compose.ha.yml) present one TLS
certificate: the first to start generates it, the others wait and read it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from chat_server.config import Settings
from chat_server.tls import load_material
print(load_material(Settings(db=sys.argv[1])).fingerprint)
"""


def test_replicas_starting_at_once_generate_one_certificate(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, db], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    fingerprints = {out.strip() for out, _ in outputs}
    assert len(fingerprints) == 1, fingerprints
    key = tmp_path / "tls" / "key.pem"
    assert key.stat().st_mode & 0o077 == 0
