"""Serve settings: where the token comes from, --run-as, the limits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from termjobs.cli.conceal import conceal
from termjobs.config import (
    HttpLimits,
    Settings,
    SettingsError,
    build_settings,
    resolve_run_as,
    token_file_is_private,
)

BASE: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 8080,
    "auth": None,
    "no_auth": None,
    "token": None,
    "env_token": None,
    "jobs_workers": 4,
    "db": "/tmp/unused.db",
    "shutdown_grace": 10.0,
}


def settings(**options: Any) -> Settings:
    return build_settings(**{**BASE, **options})


def test_the_token_comes_from_the_flag_then_the_file_then_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  from-file\n")
    assert settings(token="flag", env_token="env").token == "flag"
    chosen = settings(token_file=str(path), env_token="env")
    assert (chosen.token, chosen.token_source) == ("from-file", "file")
    assert settings(env_token="env").token_source == "env"


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read --token-file"), ("\n", "must hold one token"), ("two words", "must hold one")],
)
def test_a_bad_token_file_is_refused(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError, match=message):
        settings(token_file=str(path))


def test_token_and_token_file_are_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("x")
    with pytest.raises(SettingsError, match="not both"):
        settings(token="y", token_file=str(path))


def test_a_token_file_others_can_read_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("x")
    path.chmod(0o600)
    assert token_file_is_private(str(path))
    path.chmod(0o644)
    assert not token_file_is_private(str(path))


def test_run_as_is_checked() -> None:
    assert resolve_run_as(None) is None
    if os.geteuid() != 0:
        with pytest.raises(SettingsError, match="needs the server to run as root"):
            resolve_run_as("nobody")
        return
    with pytest.raises(SettingsError, match="no such user"):
        resolve_run_as("no-such-user-here")
    with pytest.raises(SettingsError, match="unprivileged"):
        resolve_run_as("root")
    nobody = resolve_run_as("nobody")
    assert nobody is not None and nobody.uid != 0


@pytest.mark.parametrize(
    ("limits", "flag"),
    [
        (HttpLimits(max_subscribers=0), "--max-subscribers"),
        (HttpLimits(max_connections=0), "--max-connections"),
    ],
)
def test_limits_below_their_minimum_name_their_flag(limits: HttpLimits, flag: str) -> None:
    with pytest.raises(SettingsError, match=flag):
        settings(limits=limits)


def test_a_stream_buffer_below_its_minimum_is_refused() -> None:
    with pytest.raises(SettingsError, match="--stream-buffer"):
        settings(stream_buffer=1)


def test_conceal_ignores_secrets_it_cannot_find_or_that_are_too_short() -> None:
    assert conceal(["", "abc"]) == 0
    assert conceal(["this-text-is-in-no-command-line-0123"]) == 0
