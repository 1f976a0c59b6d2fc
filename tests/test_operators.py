"""An operator's mistakes get one clear line on stderr, never a traceback, and touch nothing.

One `beacon up` runs for the module; every other command is run beside it, as an
operator would by mistake.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from beacon import __version__

from .conftest import free_port, start_beacon_up


def beacon(*args: str, env: dict[str, str] | None = None, cwd: object = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beacon", *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, cwd=cwd
    )


def one_line(res: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr and no traceback anywhere."""
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("beacon: ")
    return lines[0]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    data = tmp_path_factory.mktemp("held")
    port = free_port()
    proc = start_beacon_up(data, port, data / "beacon.log")
    yield data, port, proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def test_a_second_up_on_the_same_data_dir_refuses_and_touches_nothing(running):
    data, port, proc = running
    socket_before = (data / "redis" / "redis.sock").stat().st_ino
    line = one_line(beacon("up", "--data-dir", str(data), "--port", str(free_port())))
    assert f"pid {proc.pid}" in line and "in use" in line
    assert (data / "redis" / "redis.sock").stat().st_ino == socket_before
    # the running instance still takes new connections to its Redis
    with httpx.Client() as c:
        for _ in range(3):
            assert c.get(f"http://127.0.0.1:{port}/p.gif").status_code == 200
        assert c.get(f"http://127.0.0.1:{port}/readyz").status_code == 200


@pytest.mark.parametrize("command", [["migrate"], ["forget", "--scope", "mall", "--visitor", "x"]])
def test_commands_on_a_held_chdb_directory_name_the_holder(running, command):
    data, _, proc = running
    line = one_line(beacon(*command, "--data-dir", str(data)))
    assert f"pid {proc.pid}" in line and "in use" in line


def test_a_port_in_use_is_one_line_and_nothing_is_printed_or_generated(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = beacon("up", "--data-dir", str(tmp_path / "d"), "--port", str(port))
    line = one_line(res)
    assert str(port) in line and "in use" in line
    assert "Beacon is up" not in res.stdout and "Bearer" not in res.stdout
    assert not (tmp_path / "d" / "mall_api_key").exists() and not (tmp_path / "d" / "redis").exists()


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert "not a directory" in one_line(beacon("up", "--data-dir", str(tmp_path / "afile"), "--port", str(free_port())))
    assert "afile" in one_line(beacon("migrate", "--data-dir", str(tmp_path / "afile")))


def test_a_bad_log_level_is_one_line(tmp_path):
    line = one_line(beacon("migrate", "--data-dir", str(tmp_path), env={"BEACON_LOG_LEVEL": "loud"}))
    assert "BEACON_LOG_LEVEL" in line and "'loud'" in line


def test_each_subcommand_lists_only_its_own_settings():
    migrate = beacon("migrate", "--help").stdout
    assert "--retention-days" in migrate and "--clickhouse-url" in migrate
    assert "--max-body-bytes" not in migrate and "--cookie-name" not in migrate and "--port" not in migrate
    flush = beacon("flush", "--help").stdout
    assert "--batch-rows" in flush and "--redis-url" in flush and "--site-origins" not in flush
    dead = beacon("dead-letter", "--help").stdout
    assert "--stream" in dead and "--database" not in dead
    up = beacon("up", "--help").stdout
    assert "--max-body-bytes" in up and "--header-timeout" in up and "--workers" not in up
    serve = beacon("serve", "--help").stdout
    assert "--workers" in serve and "--batch-rows" not in serve


def test_version():
    res = beacon("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"beacon {__version__}"
