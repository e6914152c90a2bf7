"""Subscribers: who receives the digest. Owns its tables; never imports ``digest``."""

from __future__ import annotations
