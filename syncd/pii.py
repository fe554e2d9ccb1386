"""Masking of personal data for logs and terminal output: enough to recognise, not to use."""

from __future__ import annotations

SHORTEST_SHOWN = 6


def mask(kind: str, value: str) -> str:
    """`jane@example.com` → `j***@example.com`; `+14155550134` → `+1*******134`; ids: 2 chars.

    A short value is masked whole: showing a few characters of it would show all of it.
    """
    if "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if len(value) < SHORTEST_SHOWN:
        return "***"
    if kind == "phone" or (value.startswith("+") and value[1:].isdigit()):
        return value[:2] + "*" * (len(value) - 5) + value[-3:]
    return value[:2] + "***"
