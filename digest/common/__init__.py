"""Leaf helpers that every layer may use, adapters included: secret redaction for
logs and messages, the outbound address guard, retry and Retry-After, option
checks. They import nothing from ``digest`` but :mod:`digest.errors`.
"""
