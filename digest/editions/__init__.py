"""Editions: week keys, composing one per week, segments, approval."""
