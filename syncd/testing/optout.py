"""Opting out of a standard test, which always needs a written reason."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest


class OptOuts:
    """Base of the standard suites: turns `opt_outs` into skips carrying their reasons.

    A subclass writes `opt_outs = {"test_name": "why this system cannot pass it"}`. A name that
    is not a test of the suite, or a blank reason, is a TypeError when the module is imported,
    so a typo cannot silently switch a test back on or off.
    """

    opt_outs: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, reason in cls.opt_outs.items():
            if not name.startswith("test_") or not callable(getattr(cls, name, None)):
                raise TypeError(f"{cls.__name__}.opt_outs names {name!r}, which is not a test")
            if not isinstance(reason, str) or not reason.strip():
                raise TypeError(f"{cls.__name__}.opt_outs[{name!r}] needs a written reason")

    @pytest.fixture(autouse=True)
    def _honour_opt_outs(self, request: pytest.FixtureRequest) -> None:
        reason = self.opt_outs.get(request.node.originalname)
        if reason is not None:
            pytest.skip(f"opted out: {reason}")
