"""The deployment files an operator copies (docs/DEPLOYMENT.md): static checks always
run; ``systemd-analyze``, ``nginx`` and ``caddy`` where installed; the image and the
compose stack only where a container engine runs and can pull the base image. Each
skip says why."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from digest import config as config_mod
from digest.config.runtime import Runtime
from digest.config.sections import SendConfig
from digest.web.app import create_app
from tests.support import REPO, write_config

Run = subprocess.CompletedProcess[str]

UNITS = REPO / "docs" / "systemd"
DEPLOY = REPO / "deploy"
PROXIES = REPO / "docs" / "deploy"
HARDENING = [
    *["ProtectSystem=strict", "ProtectHome=true", "PrivateTmp=true", "NoNewPrivileges=true"],
    *["KillSignal=SIGTERM", "Restart=on-failure", "CapabilityBoundingSet="],
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
]


def sh(*argv: str, timeout: float = 60, env: dict[str, str] | None = None) -> Run:
    """Run ``argv``, its output as text; past ``timeout`` it counts as failed (exit 124)."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return Run(argv, 124, "", f"{argv[0]}: no answer in {timeout:g} s")


@cache
def subcommand_help(name: str) -> int:
    """Exit code of ``digest NAME --help``: 0 only for a real subcommand."""
    return sh(sys.executable, "-m", "digest", name, "--help").returncode


def unit(path: Path) -> dict[str, list[str]]:
    """A unit's keys, each with every value it is given (systemd's rule for repeats)."""
    values: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize("name", sorted(p.name for p in UNITS.glob("*.service")))
def test_every_unit_runs_a_real_subcommand(name: str) -> None:
    exec_start = unit(UNITS / name)["ExecStart"][-1].split()
    assert exec_start[0] == "/srv/digest/.venv/bin/digest", name
    assert subcommand_help(exec_start[1]) == 0, f"{name}: digest {exec_start[1]} --help"


@pytest.mark.parametrize("name", sorted(p.name for p in UNITS.glob("*.service")))
def test_units_are_hardened(name: str) -> None:
    keys = unit(UNITS / name)
    oneshot = keys.get("Type") == ["oneshot"]  # a timer starts it again: no Restart=
    for setting in HARDENING:
        key, _, value = setting.partition("=")
        if oneshot and key == "Restart":
            continue
        assert keys.get(key, [None])[-1] == value, f"{name}: {setting}"
    assert "@system-service" in keys["SystemCallFilter"], name
    assert "/var/lib/digest" in keys["ReadWritePaths"] and keys["StateDirectory"] == ["digest"]
    assert keys["User"] == ["digest"] and keys["EnvironmentFile"] == ["/etc/digest/secrets.env"]
    assert keys["Environment"] == ["DIGEST_CONFIG=/srv/digest/config.toml"]
    if name.startswith("digest-worker"):  # SIGKILL after the lease, or a late answer is lost
        assert int(keys["TimeoutStopSec"][-1]) > SendConfig().lease_seconds
        assert keys["SuccessExitStatus"] == ["3"] and keys["RestartForceExitStatus"] == ["3"]


def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the static checks above ran")
    copies, installed = [], str(Path(sys.executable).with_name("digest"))
    for name in sorted(p.name for p in UNITS.glob("*.service")):
        text = (UNITS / name).read_text(encoding="utf-8")
        target = tmp_path / name.replace("@.", "@1.")  # a template is verified as an instance
        target.write_text(text.replace("/srv/digest/.venv/bin/digest", installed))
        copies.append(str(target))
    done = sh(analyze, "verify", *copies)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr  # no warning either
    for copy in copies:
        done = sh(analyze, "security", "--offline=true", "--no-pager", "--threshold=25", copy)
        if "offline" in done.stderr and "unrecognized" in done.stderr:
            pytest.skip(f"this systemd-analyze cannot review offline: {done.stderr.strip()}")
        level = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
        assert done.returncode == 0 and level, done.stdout[-500:] + done.stderr
        assert float(level[1]) <= 2.5, f"{copy}: exposure {level[1]} (was 1.6)"


def test_nginx_example_passes_nginx_t(tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not on PATH here (.ci/run unpacks Debian's)")
    cert, key, t = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path
    openssl = ("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1")
    made = sh(*openssl, "-subj", "/CN=digest.example.com", "-keyout", str(key), "-out", str(cert))
    assert made.returncode == 0, made.stderr
    live = "/etc/letsencrypt/live/digest.example.com/"
    site = (PROXIES / "nginx.conf").read_text(encoding="utf-8")
    assert f"{live}fullchain.pem" in site and f"{live}privkey.pem" in site
    site = site.replace(f"{live}fullchain.pem", str(cert)).replace(f"{live}privkey.pem", str(key))
    (t / "site.conf").write_text(site.replace("/var/log/nginx/", f"{t}/"))
    temp = " ".join(f"{k}_temp_path {t}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi"))
    (t / "main.conf").write_text(
        f"pid {t}/nginx.pid; error_log {t}/error.log; events {{}}\n"
        f"http {{ access_log {t}/access.log; {temp} scgi_temp_path {t}/s;\n"
        f"include {t}/site.conf; }}\n"
    )
    done = sh(nginx, "-t", "-p", str(t), "-c", str(t / "main.conf"))
    assert done.returncode == 0 and "test is successful" in done.stderr, done.stderr


def test_caddyfile_passes_caddy_validate(tmp_path: Path) -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not on PATH here (.ci/run unpacks Debian's)")
    text = (PROXIES / "Caddyfile").read_text(encoding="utf-8")
    copy = tmp_path / "Caddyfile"
    copy.write_text(text.replace("/var/log/caddy/", f"{tmp_path}/"))
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    done = sh(caddy, "validate", "--config", str(copy), "--adapter", "caddyfile", env=env)
    assert done.returncode == 0 and "Valid configuration" in done.stdout + done.stderr, done.stderr


@pytest.mark.parametrize("name", ["Caddyfile", "nginx.conf"])
def test_proxy_examples_cover_the_app(name: str) -> None:
    text = (PROXIES / name).read_text(encoding="utf-8")
    for needle in ("127.0.0.1:8000", "/webhooks/", "/admin", "/r/", "/v/", "gzip"):
        assert needle in text, f"{name} lacks {needle}"
    assert 'trusted_proxies = ["127.0.0.1"]' in text
    if name == "nginx.conf":
        assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
        assert "proxy_set_header X-Forwarded-Proto $scheme;" in text


def final_stage() -> list[str]:
    lines = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ").splitlines()
    starts = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(starts) == 2 and all("python:3.11-slim" in lines[i] for i in starts)
    return [line.strip() for line in lines[starts[-1] :] if line.strip()[:1] not in ("", "#")]


def test_dockerfile_final_stage_is_non_root_and_small() -> None:
    stage = final_stage()
    instruction = {line.split()[0].upper(): line.split(None, 1)[1] for line in stage}
    assert instruction["USER"].split(":")[0] in ("digest", "10001")
    assert "--uid 10001" in instruction["RUN"] and instruction["WORKDIR"] == "/srv/digest"
    assert json.loads(instruction["ENTRYPOINT"]) == ["digest"]
    command = json.loads(instruction["CMD"])
    assert command[:3] == ["serve", "--host", "0.0.0.0"] and subcommand_help(command[0]) == 0
    assert "/healthz" in instruction["HEALTHCHECK"] and "urllib" in instruction["HEALTHCHECK"]
    assert not re.search(r"apt-get|gcc|build-essential|COPY .*wheels", "\n".join(stage))


def healthcheck(port: int) -> list[str]:
    """The image's HEALTHCHECK command for this Python, aimed at ``port``."""
    line = next(x for x in final_stage() if x.startswith("HEALTHCHECK"))
    probe = json.loads(line.split(" CMD ", 1)[1])
    return [sys.executable, *probe[1:-1], probe[-1].replace(":8000/", f":{port}/")]


def eventually(check: Callable[[], bool], seconds: float) -> bool:
    """Whether ``check`` came true within ``seconds`` (polled twice a second)."""
    deadline = time.monotonic() + seconds
    while not (done := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return done


def test_healthcheck_command_tells_up_from_down(tmp_path: Path) -> None:
    """The image's HEALTHCHECK line, run against a real ``digest serve``: 0, then not."""
    probe = healthcheck(port := _free_port())
    serve = (sys.executable, "-m", "digest", "--config", str(write_config(tmp_path)), "serve")
    server = subprocess.Popen([*serve, "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        assert eventually(lambda: server.poll() is not None or sh(*probe).returncode == 0, 60)
        assert server.poll() is None, "digest serve stopped"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert sh(*probe).returncode == 1


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])


def compose() -> Any:
    yaml = pytest.importorskip("yaml", reason="PyYAML (from schemathesis) reads compose.yaml")
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_runs_postgres_migrate_web_scheduler_and_two_workers() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", "web", "scheduler", "worker"}
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16" and "healthcheck" in postgres
    assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["command"] == ["init"]
    assert services["web"]["ports"] == ["127.0.0.1:8000:8000"]
    assert services["worker"]["deploy"] == {"replicas": 2}
    migrated = {"migrate": {"condition": "service_completed_successfully"}}
    for name in ("migrate", "web", "scheduler", "worker"):
        service = services[name]
        assert subcommand_help(service["command"][0]) == 0, name
        assert "./config.toml:/srv/digest/config.toml:ro" in service["volumes"], name
        assert service["env_file"] == ".env", name
        assert name == "migrate" or service["depends_on"] == migrated, name
    example = (DEPLOY / ".env.example").read_text(encoding="utf-8")
    for variable in ("POSTGRES_PASSWORD", "DIGEST_SECRET_KEY", "DIGEST_SMTP_PASSWORD"):
        assert re.search(f"^{variable}=", example, re.M), variable


def test_container_config_loads_and_serves_health() -> None:
    """deploy/config.toml as the containers see it: the URL compose builds replaces
    the file's, the web app builds from it and answers /healthz (no database needed)."""
    template = compose()["x-digest"]["environment"]["DIGEST_DATABASE_URL"]
    url = re.sub(r"\$\{POSTGRES_PASSWORD[^}]*\}", "s3cret", template)
    environ = {"DIGEST_DATABASE_URL": url, "DIGEST_SMTP_PASSWORD": "x", "DIGEST_SECRET_KEY": "k"}
    config = config_mod.load(DEPLOY / "config.toml", environ)
    assert config.database.url == "postgresql+psycopg://digest:s3cret@postgres:5432/digest"
    subnet = ipaddress.ip_network(compose()["networks"]["digest"]["ipam"]["config"][0]["subnet"])
    trusted = [ipaddress.ip_network(entry) for entry in config.web.trusted_proxies]
    assert any(subnet.version == net.version and subnet.subnet_of(net) for net in trusted)  # type: ignore[arg-type]
    runtime = Runtime.open(config)
    try:
        with TestClient(create_app(runtime)) as client:
            assert client.get("/healthz").json() == {"ok": True}
    finally:
        runtime.engine.dispose()


def container_engine() -> tuple[str, str]:
    """The engine that can build and run here, or "" and why none can."""
    reasons = []
    for name in ("docker", "podman"):
        exe = shutil.which(name)
        if exe is None:
            reasons.append(f"{name}: not installed")
            continue
        for step in (("info",), ("compose", "version"), ("pull", "python:3.11-slim")):
            done = sh(exe, *step, timeout=120)
            if done.returncode != 0:
                why = (done.stderr.strip() or done.stdout.strip() or "?").splitlines()[0]
                reasons.append(f"{name} {' '.join(step)}: {why}")
                break
        else:
            return exe, ""
    return "", "no container engine runs here: " + "; ".join(reasons)


@pytest.mark.slow
def test_image_and_compose_stack_come_up(tmp_path: Path) -> None:
    """Build the image, bring the stack up, see /healthz through the published port,
    run ``digest status`` in a worker (the schema is there), then take it all down."""
    engine, reason = container_engine()
    if not engine:
        pytest.skip(reason)
    port = _free_port()
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    text = text.replace("context: ..", f"context: {REPO}").replace(":8000:8000", f":{port}:8000")
    (compose_file := tmp_path / "compose.yaml").write_text(text.replace(":latest", ":smoke"))
    shutil.copy(DEPLOY / "config.toml", tmp_path / "config.toml")
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=smoke1234\nDIGEST_SECRET_KEY=smoke\n")
    project = (engine, "compose", "-p", f"digest-smoke-{port}", "-f", str(compose_file))
    try:
        up = sh(*project, "up", "-d", "--build", timeout=1800)
        assert up.returncode == 0, up.stderr[-3000:]
        probe = healthcheck(port)
        assert eventually(lambda: sh(*probe).returncode == 0, 180), "no answer on /healthz"
        status = sh(*project, "exec", "-T", "worker", "digest", "status", timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert sh(*project, "exec", "-T", "web", "id", "-u").stdout.strip() == "10001"
    finally:
        sh(*project, "down", "-v", "--remove-orphans", timeout=300)
