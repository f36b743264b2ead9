"""A PostgreSQL server on loopback for the tests of sweeps across machines.

The server is the one named by ``DESCENTLAB_TEST_POSTGRESQL`` (``.ci/run``
starts one with ``scripts/test-postgres.sh`` and exports its URL); otherwise
the first test that needs one starts a throwaway server with the same script
and stops it when the session ends. Each test gets a database of its own
(``postgres_database`` fixture), dropped afterwards. Tests are skipped, with
the reason, only where no server can be had: no driver, or no PostgreSQL
installed (on CI a server that is installed but does not start is an error).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test-postgres.sh"
ENV_URL = "DESCENTLAB_TEST_POSTGRESQL"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database (``…/postgres``)."""
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("the PostgreSQL driver is missing: pip install 'descentlab[postgresql]'")
    if os.environ.get(ENV_URL):
        yield os.environ[ENV_URL]
        return
    started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True)
    if started.returncode == 3:
        pytest.skip(f"no PostgreSQL server can be had: {started.stderr.strip()}")
    if started.returncode != 0:
        message = f"could not start a PostgreSQL server: {started.stderr.strip()[-500:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    found = dict(re.findall(r"export (\w+)=(\S+)", started.stdout))
    try:
        yield found[ENV_URL]
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", found[f"{ENV_URL}_DIR"]], capture_output=True
        )


@pytest.fixture
def postgres_database(postgres_server: str) -> Iterator[str]:
    """URL of a new, empty database on the test server (dropped after the test)."""
    import psycopg

    name = f"descentlab_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
