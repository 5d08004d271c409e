"""Certificates for TLS tests: a CA of the test's own, made by ``trustme``."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import pytest


def issue(where: Path) -> Tuple[str, str, str]:
    """(CA bundle, server certificate chain, key) for 127.0.0.1 and localhost, written
    in ``where``; the calling test skips without trustme."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, chain, key = where / "ca.pem", where / "server.pem", where / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    issued.private_key_pem.write_to_path(str(key))
    with open(chain, "wb") as out:
        for blob in issued.cert_chain_pems:
            out.write(blob.bytes())
    return str(ca_file), str(chain), str(key)
