"""Throwaway-mail domains, refused at sign-up with ``[web] block_disposable_domains``.

The list is the ``disposable-email-domains`` package's ``blocklist`` (updated with
the package); a domain is refused when it or any parent domain is on it (so
``x.mailinator.com`` too), unless that name is on the package's ``allowlist``.
"""

from __future__ import annotations

from contextlib import suppress

from disposable_email_domains import allowlist, blocklist

REFUSED = "Please use a permanent email address."


def is_disposable(address: str) -> bool:
    """True when the address's domain, or a parent domain, is a throwaway-mail one."""
    domain = address.rpartition("@")[2].strip().rstrip(".").lower()
    with suppress(UnicodeError):  # else not a usable domain: the address check refuses it
        domain = domain.encode("idna").decode("ascii")
    labels = domain.split(".")
    for start in range(len(labels) - 1):  # never the bare top-level domain
        candidate = ".".join(labels[start:])
        if candidate in allowlist:
            return False
        if candidate in blocklist:
            return True
    return False
