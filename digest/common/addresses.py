"""Which addresses the outbound guard (:mod:`digest.common.netguard`) refuses, and why.

Loopback, private (RFC 1918, fc00::/7), link-local (169.254/16 with the cloud
metadata services, fe80::/10), shared (CGNAT, 100.64/10: not ``is_private`` in
Python 3.11), and every other non-global range can be lifted by
``allow_private_addresses``; unspecified, multicast, broadcast and reserved never.
IPv6 forms that carry an IPv4 address are judged by that address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_RULES = tuple(
    (ipaddress.IPv4Network(net), why, liftable)
    for net, why, liftable in (
        ("0.0.0.0/8", "an unspecified address", False),
        ("127.0.0.0/8", "a loopback address", True),
        ("10.0.0.0/8", "a private address", True),
        ("172.16.0.0/12", "a private address", True),
        ("192.168.0.0/16", "a private address", True),
        ("169.254.0.0/16", "a link-local address", True),
        ("100.64.0.0/10", "a shared (CGNAT) address", True),  # not is_private in 3.11
        ("224.0.0.0/4", "a multicast address", False),
        ("255.255.255.255/32", "the broadcast address", False),
        ("240.0.0.0/4", "a reserved address", False),
    )
)
_V6_RULES = tuple(
    (ipaddress.IPv6Network(net), why, liftable)
    for net, why, liftable in (
        ("::/128", "an unspecified address", False),
        ("::1/128", "a loopback address", True),
        ("fe80::/10", "a link-local address", True),
        ("fc00::/7", "a private (unique local) address", True),
        ("fec0::/10", "a site-local address", True),
        ("ff00::/8", "a multicast address", False),
        ("64:ff9b:1::/48", "a local-use NAT64 address", True),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class Verdict:
    why: str  # e.g. "a loopback address"
    liftable: bool  # allow_private_addresses lets it through


def blocked_because(address: str | IPAddress) -> Verdict | None:
    """Why ``address`` may not be connected to on a feed's behalf; None when it is
    public. IPv6 forms carrying an IPv4 address (mapped ``::ffff:a.b.c.d``,
    compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) are
    judged by that address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv4Address):
        return _judge(ip, _V4_RULES)
    if ip in _V6_RULES[0][0] or ip in _V6_RULES[1][0]:  # :: and ::1, IPv4-compatible in form
        return _judge(ip, _V6_RULES)
    inner = _embedded_ipv4(ip)
    if inner is None:
        return _judge(ip, _V6_RULES)
    verdict = _judge(inner, _V4_RULES)
    return None if verdict is None else Verdict(f"{verdict.why} (IPv4 {inner})", verdict.liftable)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if int(ip) < 1 << 32 or ip in _NAT64:  # IPv4-compatible, or NAT64's well-known prefix
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _judge(ip: IPAddress, rules: Iterable[tuple[Any, str, bool]]) -> Verdict | None:
    for network, why, liftable in rules:
        if ip in network:
            return Verdict(why, liftable)
    if not ip.is_global:  # documentation, benchmarking, Teredo, discard, …
        return Verdict("a non-public (special-purpose) address", True)
    return None
