"""Dual backend: writes to a primary and a shadow, reads from the primary."""
