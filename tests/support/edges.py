"""Edges as plain lists, to compare reads of the identity graph."""

from __future__ import annotations

from syncd.identity.resolve import EdgesByKind


def flat(edges: EdgesByKind) -> list[tuple[list[int], list[int]]]:
    """Each kind's identifier and node columns, whatever parts they were read in."""
    return [
        ([key for ids, _ in chunks for key in ids], [key for _, nodes in chunks for key in nodes])
        for chunks in edges.chunks()
    ]
