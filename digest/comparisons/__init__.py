"""Comparisons: validate feed documents, upsert them, the fetch stage."""
