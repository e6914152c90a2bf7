"""Weekly digest of AI-tool comparisons: feed → edition → email → delivery ledger."""

from __future__ import annotations

__version__ = "0.1.0"
