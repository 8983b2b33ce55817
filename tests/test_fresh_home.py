"""README's "Try `ray job submit` locally" works on a fresh machine: its block, run as written in an empty
``HOME`` (no ``~/.ray``, no cache) on free ports of its own, starts a token-authenticated head and the tiny
job succeeds. Only this head's processes are stopped (never ``ray stop``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from raycluster import NOT_READY, Cluster

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = "### Try `ray job submit` locally"
PORTS = {"6390": "gcs", "8275": "dashboard", "6391": "client", "52375": "agent"}
"""The README's fixed ports, each replaced by a free one here."""


def local_recipe() -> str:
    """The first ```bash block of README's local ``ray job submit`` section."""
    section = README[README.index(SECTION) :]
    found = re.search(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    assert found, f"README's {SECTION!r} has no bash block"
    return found.group(1)


def test_the_local_recipe_brings_its_own_token_and_ports():
    """Kept in sync with what the slow test below substitutes (no cluster started here)."""
    recipe = local_recipe()
    assert "RAY_AUTH_MODE=token" in recipe and "RAY_AUTH_TOKEN_PATH=" in recipe
    made = re.search(r"secrets\.token_hex\(32\).*> \"\$RAY_AUTH_TOKEN_PATH\"", recipe)
    assert made, "the recipe does not make its token file"
    assert "~/.ray" not in recipe
    for port in PORTS:
        assert re.search(rf"[=:]{port}\b", recipe), f"README's recipe no longer uses port {port}"
    flags = ("--port=", "--dashboard-port=", "--ray-client-server-port=", "--dashboard-agent-listen-port=")
    for flag in flags:
        assert flag in recipe, f"README's recipe leaves {flag} at Ray's default"
    assert "ray job submit" in recipe and "/tmp/ray-try-out" in recipe and "RAY_TMP=/tmp/ray-try " in recipe


def _recipe_here(recipe: str, cluster: Cluster, agent_port: int, token: Path, output: Path) -> str:
    ports = {"gcs": cluster.gcs_port, "dashboard": cluster.dashboard_port}
    ports.update(client=cluster.client_server_port, agent=agent_port)
    text = recipe.replace("/tmp/ray-try-out", str(output)).replace("/tmp/ray-try.token", str(token))
    text = text.replace("RAY_TMP=/tmp/ray-try ", f"RAY_TMP={cluster.temp_dir} ")
    for old, name in PORTS.items():
        text = re.sub(rf"(?<=[=:]){old}\b", str(ports[name]), text)
    assert "/tmp/ray-try" not in text
    return text


def _clean_env(home: Path) -> dict[str, str]:
    """A fresh machine's shell: an empty HOME, the venv's tools on PATH, no Ray or pixart-batch settings."""
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "TERM")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["HOME"] = str(home)
    return env


def _bash(script: str, env: dict[str, str]) -> tuple[int, str]:
    command = ["bash", "-euo", "pipefail", "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.slow
def test_the_local_recipe_runs_in_an_empty_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    cluster = Cluster(ROOT)
    agent_port = cluster.ports.one()
    script = _recipe_here(local_recipe(), cluster, agent_port, tmp_path / "ray.token", tmp_path / "out")
    env = _clean_env(home)
    try:
        code, output = _bash(script, env)
        exports = "\n".join(line for line in script.splitlines() if line.startswith("export "))
        submit = f"{exports}\n{script[script.index('ray job submit') :]}"
        for _ in range(10):  # README: "No available agent" right after `ray start`: submit again
            if code == 0 or NOT_READY not in output or "submitted successfully" in output:
                break
            time.sleep(5)
            code, output = _bash(submit, env)
        assert code == 0, f"{output[-4000:]}\n{cluster.log_tail()}"
        assert "AuthenticationError" not in output
        assert re.search(r"Job '\S+' succeeded", output), output[-3000:]
        assert not (home / ".ray").exists()  # the token is the recipe's own file, not ~/.ray/auth_token
    finally:
        cluster.stop()
    from pixart_batch.audit import verify

    result = verify(str(tmp_path / "out"))
    assert result.ok and result.images == 22, result.lines()
