"""How large the HTML part of a digest is on the wire, and where things sit in it.

Gmail clips a message whose HTML passes about 102 KB: the reader sees "[Message
clipped]" and not the footer, where the unsubscribe link and the postal address
are. What counts is the HTML part as the message carries it, quoted-printable
encoded with CRLF line ends (RFC 2045 6.7), not the decoded text: quoted-printable
adds a soft line break (``=`` CRLF) every 76 characters and writes every ``=``
and every non-ASCII byte as three characters: 8 % more for the sample edition,
17 % for one rich in non-ASCII text (96,685 decoded bytes, 113,661 on the wire). So
``[edition] max_html_bytes`` and the pre-flight's clip check both measure
:func:`wire_html`, built by the very code that builds each reader's message
(:func:`digest.render.personalize.html_part_bytes`).
"""

from __future__ import annotations

import binascii

# The HTML part's body as sent (quoted-printable, CRLF), slots filled with the
# values given (HTML-escaped, as in the message): the message builder's own code.
from digest.render.personalize import html_part_bytes as wire_html

__all__ = ["GMAIL_CLIP_BYTES", "decoded_size", "wire_html", "wire_offset"]

GMAIL_CLIP_BYTES = 102 * 1024  # Gmail shows "[Message clipped]" past about 102 KB of HTML
_EQUALS, _CRLF = 0x3D, b"\r\n"


def decoded_size(wire: bytes) -> int:
    """The size of ``wire`` once decoded (what a client renders, CRLF line ends)."""
    return len(binascii.a2b_qp(wire))


def wire_offset(wire: bytes, needle: str) -> int:
    """Where ``needle`` (text as it appears in the decoded HTML) starts in ``wire``,
    in bytes from the start of the HTML part; -1 when it is not there."""
    at = binascii.a2b_qp(wire).find(needle.encode("utf-8"))
    return -1 if at < 0 else _wire_index(wire, at)


def _wire_index(wire: bytes, decoded_offset: int) -> int:
    """The wire offset of the byte at ``decoded_offset`` in the decoded text."""
    i = decoded = 0
    while i < len(wire) and decoded < decoded_offset:
        if wire[i] == _EQUALS:
            if wire[i + 1 : i + 3] == _CRLF:  # a soft line break decodes to nothing
                i += 3
                continue
            i += 3  # "=XX": one decoded byte
        else:
            i += 1
        decoded += 1
    return i
