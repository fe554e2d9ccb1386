"""An emulator serving alone (`syncd emulate <system>`): what it says when it starts (where it
listens, what it holds, and the options and environment that point syncd.toml at it), and
how it waits to be stopped."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Mapping, Sequence


def ready_text(
    system: str,
    url: str,
    holds: str,
    options: Mapping[str, str | int],
    secrets: Mapping[str, tuple[str, str]],
    *,
    destination: bool = True,
    notes: Sequence[str] = (),
) -> str:
    """`options` are written as they would be in syncd.toml; `secrets` maps an option to the
    environment variable it names and the emulator's value for it (public, fake: they open
    nothing but the emulator)."""
    sections = "[sources.NAME.options]" + (" or [destinations.NAME.options]" if destination else "")
    lines = [
        f"{system} emulator on {url}: {holds}",
        f"Point syncd.toml at it with these options in {sections}:",
        *(f"  {option} = {json.dumps(value)}" for option, value in options.items()),
        *(f'  {option} = {{ env = "{variable}" }}' for option, (variable, _) in secrets.items()),
        "and this environment:",
        *(f"  export {variable}={value}" for variable, value in secrets.values()),
        *notes,
        "Ctrl-C stops.",
    ]
    return "\n".join(lines)


def wait_until_stopped() -> None:
    """Return on SIGTERM; Ctrl-C raises KeyboardInterrupt, as anywhere."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    # In slices: the system may hand a signal to a server thread, and Python runs its handler
    # only when the main thread runs again. One long wait ignored that Ctrl-C.
    while not stopped.wait(0.2):
        pass
