"""Process-wide settings for syncd's own processes (the command and its mapping workers)."""

from __future__ import annotations

import gc


def tune_garbage_collector() -> None:
    """Collect cycles less often: a pull holds millions of small objects at once and makes
    few reference cycles, and the default thresholds rescan them every few hundred
    allocations. What exists at start (modules, compiled mappings) is never rescanned."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
