"""A real `mlflow server --app-name basic-auth` on loopback: Lamina passes the user's
credentials, its own roles refuse a read-only user, and the server's refusals are reported
clearly and change nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from registry_runs import make_run

from lamina.errors import LaminaError
from lamina.governance import access, identity
from lamina.registry import aliases, signing, tracking, versions

pytestmark = pytest.mark.slow

ADMIN_PW = "admin-pw-Q7x2"
READER_PW = "reader-pw-K9z4"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    ini = root / "auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = admin\nadmin_password = {ADMIN_PW}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key",
    }
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    cmd = [
        mlflow_bin,
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=root, stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not answer /health in 90 s")
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


def _as(monkeypatch, uri: str, user: str, password: str) -> None:
    monkeypatch.setenv("LAMINA_TRACKING_URI", uri)
    monkeypatch.setenv("LAMINA_USER", user)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def test_read_only_user_cannot_register_or_promote(server, tmp_path, monkeypatch):
    from mlflow.server import get_app_client

    _as(monkeypatch, server, "admin", ADMIN_PW)
    get_app_client("basic-auth", tracking_uri=server).create_user(username="reader", password=READER_PW)
    access.init_policy("admin")
    # About the server's refusals, not four eyes: the admin registers and approves alone.
    access.save_policy(access.load_policy().model_copy(update={"four_eyes": []}))
    identity.create_key("reader")  # as the reader does with `lamina keys user-init`
    access.grant("reader", "viewer")
    signing.init_keys()
    run_a = make_run(tmp_path, "run-a", user="alice")
    run_b = make_run(tmp_path, "run-b", user="alice", seed=1)
    assert versions.register(run_a, "tickets")["version"] == 1
    aliases.promote("tickets", 1, "production")

    # Lamina's own roles: a viewer may neither register nor promote.
    _as(monkeypatch, server, "reader", READER_PW)
    with pytest.raises(LaminaError, match=r"'reader' \(roles: viewer\) lacks permission 'register'"):
        versions.register(run_b, "tickets")
    with pytest.raises(LaminaError, match=r"lacks permission 'promote.staging'"):
        aliases.promote("tickets", 1, "staging")

    # Even if the local policy were loosened, the server holds the line on the shared store.
    _as(monkeypatch, server, "admin", ADMIN_PW)
    access.grant("reader", "trainer")
    access.grant("reader", "approver")
    _as(monkeypatch, server, "reader", READER_PW)
    with pytest.raises(LaminaError, match=r"MLflow server refused .* for user 'reader'"):
        aliases.promote("tickets", 1, "staging")
    with pytest.raises(LaminaError, match=r"MLflow server refused .* for user 'reader'"):
        versions.register(run_b, "tickets")

    _as(monkeypatch, server, "admin", ADMIN_PW)
    c = tracking.client()
    assert [mv.version for mv in c.search_model_versions("name = 'tickets'")] == ["1"]
    assert c.get_registered_model("tickets").aliases == {"production": "1"}
    assert [m["to"] for m in aliases.moves("tickets")] == [1]
    # the reader can still read
    _as(monkeypatch, server, "reader", READER_PW)
    assert aliases.current("tickets", "production") == 1
    _as(monkeypatch, server, "reader", "not-the-password")
    with pytest.raises(
        LaminaError, match=r"refused reading tickets@production for user 'reader': UNAUTHENTICATED \(wrong"
    ):
        versions.resolve("tickets@production")
    _as(monkeypatch, server, "reader", READER_PW)

    # A teammate on another machine (trusting the same public key) resolves by download.
    public = signing.key_paths()[1].read_bytes()
    registered = versions.registry_root()
    registered.rename(registered.with_name("registry-elsewhere"))
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path / "teammate"))
    signing.key_paths()[1].write_bytes(public)
    path = versions.resolve("tickets@production")
    assert (
        path.is_relative_to(tmp_path / "teammate")
        and (path / "adapter" / "adapter_model.safetensors").is_file()
    )
