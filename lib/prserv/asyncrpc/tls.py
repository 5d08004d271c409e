"""TLS contexts for ``wss://``, from the standard library's ``ssl`` defaults.

A publishing server on the internet is reached over ``wss://`` so that its answers
arrive intact: the server presents a certificate (``server_context``), a client
checks it against the system's CAs or a bundle it is given (``client_context``).
Both take ``ssl.create_default_context``'s choices (TLS 1.2 or later, its ciphers,
host-name checking on the client).
"""

from __future__ import annotations

import ssl
from typing import Optional


class TLSConfigError(ValueError):
    """A certificate, key or CA file that cannot be used (the message names it)."""


def server_context(certificate: str, key: Optional[str] = None) -> ssl.SSLContext:
    """For a ``wss://`` listener: the certificate chain (PEM) and its key (PEM; the
    certificate file when None)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError("cannot use TLS certificate %s%s: %s" % (
            certificate, " with key %s" % key if key else "", getattr(exc, "strerror", None) or exc)) from None
    return context


def client_context(ca_file: Optional[str] = None) -> ssl.SSLContext:
    """For connecting to ``wss://`` servers: verified against ``ca_file`` (PEM bundle),
    else the system's CAs."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError("cannot use CA file %s: %s" % (ca_file, getattr(exc, "strerror", None) or exc)) \
                from None
    return context
