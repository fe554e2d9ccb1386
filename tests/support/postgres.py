"""A throwaway PostgreSQL cluster on a loopback port, for the test suite (locally and in CI).

initdb refuses to run as root, so as root the cluster runs as an unprivileged user that is
created when missing. Data lives in a temporary folder and is removed on stop.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CLUSTER_USER = "syncdtest"


def find_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server binaries, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_cluster_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam(CLUSTER_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", CLUSTER_USER], check=True)
    return ["runuser", "-u", CLUSTER_USER, "--", *command]


@dataclass
class Cluster:
    """A running cluster; `url` is a SQLAlchemy URL of its postgres database."""

    bin_dir: Path
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run(
            _as_cluster_user(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.folder / "data"),
                    "-m",
                    "immediate",
                    "stop",
                ]
            ),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.folder, ignore_errors=True)


def start() -> Cluster:
    """Start a fresh cluster; raises RuntimeError when PostgreSQL is not installed."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="syncd-pg-"))
    os.chmod(folder, 0o777)
    port = _free_port()
    subprocess.run(
        _as_cluster_user(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(folder / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    options = (
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    )
    subprocess.run(
        _as_cluster_user(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(folder / "data"),
                "-o",
                options,
                "-l",
                str(folder / "log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    return Cluster(bin_dir, folder, port)
