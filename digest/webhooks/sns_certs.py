"""Amazon SNS message signatures: the certificate URL check, the certificate cache and
the RSA signature check. ``cryptography`` and ``httpx`` are imported here for the SNS
adapters and nowhere else under ``digest/webhooks``.

Follows "Verifying the signatures of Amazon SNS messages" (SNS developer guide,
sns-verify-signature-of-message.html) and the JSON formats of HTTP/HTTPS
notifications and (un)subscription confirmations:

1. ``SigningCertURL`` must be an ``https`` URL on ``sns.<region>.amazonaws.com``
   (``.amazonaws.com.cn`` in China) ending in ``.pem``; anything else is refused
   *before* any network request, so a forged message cannot make us fetch a URL of
   its choosing (:func:`check_cert_url`).
2. The PEM is fetched over HTTPS (TLS authenticates the AWS host; redirects are not
   followed) and kept in memory per URL (:class:`CertificateCache`).
3. ``SignatureVersion`` "1" is SHA1withRSA, "2" is SHA256withRSA (PKCS#1 v1.5), over
   the string to sign: ``"Name\\nvalue\\n"`` for each field of
   :data:`SIGNED_FIELDS`, in that (byte-wise sorted) order, skipping ``Subject`` when
   the message has none (:func:`string_to_sign`, :func:`verify_signature`).

Every failure raises :class:`WebhookRejected`: 400 for a malformed message, 401 for a
bad signature or certificate URL, 503 when the certificate cannot be fetched right
now (SNS retries a 5xx answer, so a passing network fault loses nothing).
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from digest.webhooks.base import WebhookRejected

# The documented fields of the string to sign, per SNS message Type.
SIGNED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
OPTIONAL_FIELDS: Final = frozenset({"Subject"})

SIGNATURE_HASHES: Final[Mapping[str, Callable[[], hashes.HashAlgorithm]]] = {
    "1": hashes.SHA1,  # SignatureVersion 1: SHA1withRSA (the SNS default)
    "2": hashes.SHA256,  # SignatureVersion 2: SHA256withRSA
}

SNS_HOST: Final = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_PEM_PATH: Final = re.compile(r"^/[A-Za-z0-9._/-]*\.pem$")
MAX_PEM_BYTES: Final = 64 * 1024
FETCH_TIMEOUT_SECONDS: Final = 5.0
MAX_CACHED: Final = 64

Fetch = Callable[[str], bytes]


def check_sns_url(url: object, *, what: str = "SigningCertURL") -> SplitResult:
    """``url`` split, if it is ``https://sns.<region>.amazonaws.com[.cn]/…`` with no
    user info, no port but 443 and no fragment. Raises WebhookRejected (401)."""
    if not isinstance(url, str) or not url.isascii() or any(c.isspace() for c in url):
        raise WebhookRejected(f"SNS {what} is not a plain URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRejected(f"SNS {what} is not a valid URL") from exc
    if (
        parts.scheme != "https"
        or "@" in parts.netloc
        or port not in (None, 443)
        or not SNS_HOST.match(parts.hostname or "")
        or parts.fragment
    ):
        raise WebhookRejected(f"SNS {what} {url!r} is not on an Amazon SNS host")
    return parts


def check_cert_url(url: object) -> str:
    """The canonical form of an acceptable ``SigningCertURL`` (what may be fetched).

    Accepts only ``https://sns.<region>.amazonaws.com[.cn]/<name>.pem`` with no
    user info, no port but 443, no query and no fragment. Raises
    :class:`WebhookRejected` (401) otherwise; nothing is fetched then.
    """
    parts = check_sns_url(url)
    if not _PEM_PATH.match(parts.path) or "/.." in parts.path or parts.query:
        raise WebhookRejected(f"SNS SigningCertURL {url!r} is not a certificate")
    # Rebuilt from the checked parts, so the fetcher cannot read the URL differently.
    return f"https://{parts.hostname}{parts.path}"


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signed for ``message``. Raises WebhookRejected(400) when the
    type is unknown or a signed field is missing or not a string."""
    fields = SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise WebhookRejected(f"unknown SNS message Type {message.get('Type')!r}", status=400)
    out: list[str] = []
    for name in fields:
        value = message.get(name)
        if value is None and name in OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise WebhookRejected(f"SNS message field {name!r} is missing", status=400)
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


def signature_hash(message: Mapping[str, Any]) -> hashes.HashAlgorithm:
    """The hash ``message["SignatureVersion"]`` names; WebhookRejected (401) if unknown."""
    version = message.get("SignatureVersion")
    hash_type = SIGNATURE_HASHES.get(version) if isinstance(version, str) else None
    if hash_type is None:
        raise WebhookRejected(f"unsupported SNS SignatureVersion {version!r}")
    return hash_type()


def verify_signature(
    certificate: x509.Certificate, message: Mapping[str, Any], *, now: datetime
) -> None:
    """Check ``message["Signature"]`` with ``certificate``'s RSA key.

    Raises :class:`WebhookRejected` (401) for an unknown ``SignatureVersion``, a
    certificate outside its validity period at ``now``, or a signature that does not
    match :func:`string_to_sign`.
    """
    hash_type = signature_hash(message)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise WebhookRejected("the SNS signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookRejected("the SNS signing certificate has no RSA key")
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookRejected("the SNS Signature is not base64") from exc
    try:
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), hash_type)
    except InvalidSignature as exc:
        raise WebhookRejected("the SNS signature does not match") from exc


def fetch_pem(url: str) -> bytes:
    """GET ``url`` (already checked) over HTTPS; the PEM bytes.

    Raises WebhookRejected: 401 when AWS answers 4xx (no such certificate), 503 for a
    network failure, a 5xx or an oversized answer (SNS will retry the message).
    """
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise WebhookRejected(f"could not fetch {url}: {exc}", status=503) from exc
    if 400 <= response.status_code < 500:
        raise WebhookRejected(f"{url} answered {response.status_code}")
    if response.status_code != 200 or len(response.content) > MAX_PEM_BYTES:
        raise WebhookRejected(f"{url} answered {response.status_code}", status=503)
    return response.content


class CertificateCache:
    """SNS signing certificates by URL, fetched once per process.

    ``fetch`` (``url -> PEM bytes``) defaults to :func:`fetch_pem`; tests pass their
    own. ``get`` checks the URL with :func:`check_cert_url` before anything else.
    At most :data:`MAX_CACHED` certificates are kept (SNS uses a handful).
    """

    def __init__(self, fetch: Fetch | None = None) -> None:
        self.fetch: Fetch = fetch or fetch_pem
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def get(self, url: object) -> x509.Certificate:
        """The certificate at ``url``. Raises WebhookRejected (see :func:`check_cert_url`
        and :func:`fetch_pem`; 503 for a body that is not a PEM certificate)."""
        canonical = check_cert_url(url)
        with self._lock:
            cached = self._certs.get(canonical)
        if cached is not None:
            return cached
        pem = self.fetch(canonical)
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise WebhookRejected(f"{canonical} is not a PEM certificate", status=503) from exc
        with self._lock:
            if len(self._certs) >= MAX_CACHED:
                self._certs.pop(next(iter(self._certs)))
            self._certs[canonical] = cert
        return cert


# One cache per process, shared by every SNS adapter instance.
DEFAULT_CERTIFICATES: Final = CertificateCache()
