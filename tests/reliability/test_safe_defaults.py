"""Must hold 7: the dashboard and every MLflow server the project shows listen on 127.0.0.1 by default.

Checks the files a user runs or copies: ``.streamlit/config.toml``, the shell scripts, and
every ``mlflow server`` / ``mlflow ui`` / ``streamlit run`` command in the README and docs.
"""

from __future__ import annotations

import re
import tomllib

import pytest
from bnn_testing import REPO

DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))
COMMAND = re.compile(r"\b(mlflow\s+(server|ui)|streamlit\s+run)\b")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "$host", '"$host"')


def test_dashboard_listens_on_localhost_with_an_upload_limit():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert 0 < config["server"]["maxUploadSize"] <= 50  # MB
    assert config["browser"]["gatherUsageStats"] is False


def test_mlflow_server_and_ui_default_to_localhost():
    """Commands shown without ``--host`` rely on MLflow's own default, checked here."""
    import click
    from mlflow.cli import cli

    for name in ("server", "ui"):
        command = cli.get_command(click.Context(cli), name)
        (host,) = [p.default for p in command.params if p.name == "host"]
        assert host == "127.0.0.1", name


def command_lines(path):
    """Commands in ``path`` that start a server (Markdown: inside code fences), continuation lines joined."""
    lines, joined, fenced = [], "", path.suffix != ".md"
    for line in path.read_text().splitlines():
        if path.suffix == ".md" and line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        joined = f"{joined} {line.strip()}" if joined else line.strip()
        if joined.endswith("\\"):
            joined = joined[:-1]
            continue
        if COMMAND.search(joined) and not joined.startswith("#"):
            lines.append(joined)
        joined = ""
    return lines


@pytest.mark.parametrize("path", DOCS + SCRIPTS, ids=lambda p: p.name)
def test_documented_servers_bind_localhost(path):
    for line in command_lines(path):
        for value in re.findall(r"(?:--host|--server\.address)[ =](\S+)", line):
            assert value.strip("'\"") in LOCAL_HOSTS or "basic-auth" in line, f"{path.name}: {line}"
        assert "0.0.0.0" not in line or "basic-auth" in line, f"{path.name}: {line}"


def test_commands_were_found():
    """The scan above has power: the docs do show server commands."""
    assert sum(len(command_lines(p)) for p in DOCS) >= 3


def test_authentication_is_documented():
    text = (REPO / "docs" / "reliability.md").read_text()
    assert "mlflow server --app-name basic-auth" in text
    readme = (REPO / "README.md").read_text()
    assert "basic-auth" in readme or "docs/reliability.md" in readme, "README must say how to add authentication"
