"""DKIM signing (RFC 6376) of outgoing SMTP messages, with dkimpy.

The only module that imports ``dkim``. Signed headers include the one-click
unsubscribe pair (RFC 8058 section 4 requires List-Unsubscribe and
List-Unsubscribe-Post to be covered by a DKIM signature) and ``Feedback-ID``;
headers named here but absent are still listed, so nobody can add them later
without breaking the signature.
"""

from __future__ import annotations

from pathlib import Path

from digest.common import options
from digest.common.options import KEY

SIGNED_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"MIME-Version",
    b"Content-Type",
    b"Reply-To",
    b"List-Id",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
    b"Feedback-ID",
)


class DkimSigner:
    """Signs with one key: ``d=domain``, ``s=selector``, rsa-sha256, relaxed/relaxed."""

    def __init__(self, *, domain: str, selector: str, key_path: Path | str) -> None:
        """Raises ValueError naming the key when the key file cannot be used."""
        try:
            self._key = Path(key_path).read_bytes()
        except OSError as exc:
            raise ValueError(
                f"key 'dkim_key_path': cannot read {key_path}: {exc.strerror}"
            ) from None
        if b"PRIVATE KEY" not in self._key:
            raise ValueError(f"key 'dkim_key_path': {key_path} is not a PEM private key")
        self.domain = domain.encode("ascii")
        self.selector = selector.encode("ascii")

    def sign(self, message: bytes) -> bytes:
        """``message`` with a DKIM-Signature header in front."""
        import dkim  # here: dkimpy and dnspython cost every process ~11 MB, most never sign

        try:
            header = dkim.sign(
                message,
                self.selector,
                self.domain,
                self._key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=list(SIGNED_HEADERS),
            )
        except dkim.DKIMException as exc:
            raise ValueError(f"DKIM signing failed: {exc}") from exc
        return bytes(header) + message


def dkim_signer(
    domain: str | None, selector: str | None, key_path: Path | str | None
) -> DkimSigner | None:
    """The signer the SMTP transport's three DKIM keys ask for: None when none is
    given; ValueError naming the keys when only some are."""
    given = [v is not None for v in (domain, selector, key_path)]
    if not any(given):
        return None
    if not all(given):
        raise ValueError(
            "keys 'dkim_domain', 'dkim_selector' and 'dkim_key_path' go together: give all three"
        )
    assert domain is not None and selector is not None and key_path is not None
    options.text("dkim_domain", domain, style=KEY)
    options.text("dkim_selector", selector, style=KEY)
    return DkimSigner(domain=domain, selector=selector, key_path=key_path)
