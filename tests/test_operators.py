"""Several operators (issue 15): the CLI adds them, they sign in with password and a
TOTP code (enrolling at the first sign-in), roles limit what they may do, the
shared password stops working once the first operator exists, disabling ends a
session, and everything lands in the audit log.

Real app (``create_app``), real SQLite database, real argon2 and real TOTP codes
(pyotp) at the runtime's clock, which the tests move.
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from digest import pipeline
from digest.config.runtime import Runtime
from digest.desk import operators
from digest.store.db import session_scope
from digest.web.admin import FailedAttempts
from digest.web.app import create_app
from tests.desk_support import (
    OPERATOR_PASSWORD,
    SHARED_PASSWORD,
    TOKEN,
    Clock,
    add_operator,
    csrf_of,
    desk_env,
    desk_runtime,
    password_step,
    secret_on,
    sign_in,
    sign_in_as,
)

ADA = "ada@example.com"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rt(tmp_path: Path, clock: Clock) -> Iterator[Runtime]:
    runtime = desk_runtime(tmp_path, clock)
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), follow_redirects=False) as c:
        yield c


def cli(tmp_path: Path, *args: str, stdin: str = "", shared: bool = True) -> Result:
    from digest.cli import app

    config = str(tmp_path / "config.toml")
    return CliRunner().invoke(
        app, ["--config", config, *args], input=stdin, env=desk_env(shared=shared)
    )


def basic(password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"op:{password}".encode()).decode()}


def test_an_operator_added_on_the_cli_enrols_then_signs_in_with_a_fresh_code_each_time(
    tmp_path: Path, rt: Runtime, client: TestClient, clock: Clock
) -> None:
    added = cli(tmp_path, "operators", "add", "Ada@Example.com", "--role", "admin",
                stdin=f"{OPERATOR_PASSWORD}\n{OPERATOR_PASSWORD}\n")  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "Added operator ada@example.com (admin)" in added.stdout

    login = client.get("/admin/login")
    assert 'name="email"' in login.text and "no longer signs in" in login.text
    assert client.get("/admin/login/code").status_code == 401  # no password step yet
    assert password_step(client, ADA, "wrong password!!").status_code == 401
    assert password_step(client, ADA).headers["location"] == "/admin/login/code"

    enrol = client.get("/admin/login/code")
    assert "Set up your authenticator" in enrol.text
    assert '<img src="data:image/svg+xml;base64,' in enrol.text
    secret = secret_on(enrol.text)
    totp = pyotp.TOTP(secret)
    wrong = client.post("/admin/login/code", data={"csrf": csrf_of(enrol.text), "code": "000000"})
    assert wrong.status_code == 401 and "Wrong code" in wrong.text
    assert client.get("/admin/editions").status_code == 401  # still not signed in
    code = totp.at(clock.now)
    done = client.post("/admin/login/code", data={"csrf": csrf_of(enrol.text), "code": code})
    assert done.status_code == 303 and done.headers["location"] == "/admin"
    desk = client.get("/admin/editions")
    assert desk.status_code == 200
    client.post("/admin/logout", data={"csrf": csrf_of(desk.text)})
    assert client.get("/admin/editions").status_code == 401

    # The second time: no QR code, just the code; the one already used is refused.
    clock.tick()
    password_step(client, ADA)
    ask = client.get("/admin/login/code")
    assert "Enter your code" in ask.text and "data:image/svg" not in ask.text
    reused = client.post("/admin/login/code", data={"csrf": csrf_of(ask.text), "code": code})
    assert reused.status_code == 401 and "already used" in reused.text
    fresh = client.post(
        "/admin/login/code", data={"csrf": csrf_of(ask.text), "code": totp.at(clock.now)}
    )
    assert fresh.status_code == 303
    assert client.get("/admin/editions").status_code == 200
    listed = cli(tmp_path, "operators", "list")
    assert "ada@example.com" in listed.stdout and "enrolled" in listed.stdout


def test_wrong_codes_count_against_the_sign_in_limit(rt: Runtime, client: TestClient) -> None:
    client.app.state.admin.attempts = FailedAttempts(3)  # type: ignore[attr-defined]
    add_operator(rt, ADA, "editor")
    password_step(client, ADA)
    page = client.get("/admin/login/code")
    secret, csrf = secret_on(page.text), csrf_of(page.text)
    for guess in ("111111", "222222", "333333"):
        answer = client.post("/admin/login/code", data={"csrf": csrf, "code": guess})
        assert answer.status_code == 401
    right = pyotp.TOTP(secret).at(rt.now())
    blocked = client.post("/admin/login/code", data={"csrf": csrf, "code": right})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert "Too many attempts" in blocked.text
    assert client.get("/admin/editions").status_code == 401


def test_roles_limit_what_an_operator_may_do(tmp_path: Path, rt: Runtime) -> None:
    key = pipeline.compose(rt).edition.key  # type: ignore[union-attr]
    app = create_app(rt)
    with TestClient(app, follow_redirects=False) as viewer_client:
        viewer = sign_in_as(viewer_client, rt, "viewer")
        approve = viewer_client.post(f"/admin/editions/{key}/approve", data={"csrf": viewer.csrf})
        assert approve.status_code == 403 and "editor" in approve.text
        assert viewer_client.get("/admin/operators").status_code == 403
        assert viewer_client.get("/admin/audit").status_code == 200
    with TestClient(app, follow_redirects=False) as editor_client:
        sign_in_as(editor_client, rt, "editor")
        assert editor_client.get("/admin/operators").status_code == 403
    with TestClient(app, follow_redirects=False) as admin_client:
        sign_in_as(admin_client, rt, "admin")
        page = admin_client.get("/admin/operators")
        assert page.status_code == 200
        assert "viewer@example.com" in page.text and "editor@example.com" in page.text


def test_the_shared_password_signs_in_only_until_the_first_operator_exists(
    rt: Runtime, client: TestClient
) -> None:
    assert client.get("/admin/editions", headers=basic(SHARED_PASSWORD)).status_code == 200
    login = client.get("/admin/login")
    assert "Your name" in login.text and "until the first operator is added" in login.text
    posted = client.post(
        "/admin/login",
        data={"csrf": csrf_of(login.text), "password": SHARED_PASSWORD, "name": "Boot"},
    )
    assert posted.status_code == 303
    page = client.get("/admin/operators")
    assert page.status_code == 200 and "No operator yet" in page.text
    added = client.post(
        "/admin/operators",
        data={"csrf": csrf_of(page.text), "email": ADA, "role": "admin",
              "password": OPERATOR_PASSWORD},
    )  # fmt: skip
    assert added.status_code == 303
    assert ADA in client.get("/admin/operators").text

    with TestClient(client.app, follow_redirects=False) as other:  # type: ignore[arg-type]
        refused = other.get("/admin/editions", headers=basic(SHARED_PASSWORD))
        assert refused.status_code == 401 and "shared password no longer works" in refused.text
        login = other.get("/admin/login")
        assert 'name="email"' in login.text
        again = other.post(
            "/admin/login", data={"csrf": csrf_of(login.text), "password": SHARED_PASSWORD}
        )
        assert again.status_code == 401 and "digest_admin" not in other.cookies
        bearer = {"authorization": f"Bearer {TOKEN}"}  # scripts keep the token
        assert other.get("/admin/editions", headers=bearer).status_code == 200
        sign_in(other, rt, ADA)
        log = other.get("/admin/audit", params={"action": "operator.add"})
        assert "Boot (bootstrap session)" in log.text and ADA in log.text


def test_a_disabled_operator_is_out_at_once_and_a_new_role_applies_at_the_next_request(
    rt: Runtime,
) -> None:
    app = create_app(rt)
    with (
        TestClient(app, follow_redirects=False) as admin,
        TestClient(app, follow_redirects=False) as other,
    ):
        boss = sign_in_as(admin, rt, "admin")
        them = sign_in_as(other, rt, "admin", email="bea@example.com")
        assert other.get("/admin/operators").status_code == 200
        bea = _id_of(rt, them.email)
        answer = admin.post(
            f"/admin/operators/{bea}/role", data={"csrf": boss.csrf, "role": "viewer"}
        )
        assert answer.status_code == 303
        assert other.get("/admin/operators").status_code == 403  # same session, new role
        assert other.get("/admin/audit").status_code == 200

        admin.post(f"/admin/operators/{bea}/disable", data={"csrf": boss.csrf})
        assert "disabled since" in admin.get("/admin/operators").text
        assert other.get("/admin/editions").status_code == 401
        assert other.get("/admin/editions", headers={"accept": "text/html"}).status_code == 303
        refused = password_step(other, them.email)
        assert refused.status_code == 401 and "Wrong email or password" in refused.text

        me = _id_of(rt, boss.email)  # the last enabled admin stays
        kept = admin.post(f"/admin/operators/{me}/disable", data={"csrf": boss.csrf})
        assert kept.status_code == 400 and "last enabled admin" in kept.text
        assert admin.get("/admin/editions").status_code == 200


def _id_of(rt: Runtime, email: str) -> int:
    with session_scope(rt.engine) as session:
        found = operators.named(session, email).id
    assert found is not None
    return found


def test_the_audit_page_and_its_csv_list_what_operators_did(
    tmp_path: Path, rt: Runtime, client: TestClient
) -> None:
    key = pipeline.compose(rt).edition.key  # type: ignore[union-attr]
    assert cli(tmp_path, "pause", key, "--reason", "typo in the subject").exit_code == 0
    me = sign_in_as(client, rt, "admin")
    viewer = client.post(
        "/admin/operators",
        data={"csrf": me.csrf, "email": "Vic@Example.com", "role": "viewer",
              "password": OPERATOR_PASSWORD},
    )  # fmt: skip
    assert viewer.status_code == 303
    vic = _id_of(rt, "vic@example.com")
    client.post(f"/admin/operators/{vic}/reset-totp", data={"csrf": me.csrf})

    page = client.get("/admin/audit")
    assert page.status_code == 200
    for seen in ("operator.add", "operator.totp_reset", "operator.sign_in", "edition.pause",
                 "typo in the subject", "admin@example.com", "cli:"):  # fmt: skip
        assert seen in page.text, seen
    assert page.text.index("operator.totp_reset") < page.text.index("edition.pause")  # newest first
    only = client.get("/admin/audit", params={"target": f"operator:{vic}"}).text
    assert "operator.add" in only and "edition.pause" not in only

    export = client.get("/admin/audit.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert {"operator.add", "operator.totp_reset", "edition.pause"} <= {r["action"] for r in rows}
    assert any(r["target"] == f"edition:{key}" and r["via"] == "cli" for r in rows)
    shown = cli(tmp_path, "audit", "--target", f"operator:{vic}")
    assert shown.exit_code == 0 and "operator.totp_reset" in shown.stdout


def test_the_cli_refuses_a_short_password_in_one_line(tmp_path: Path, rt: Runtime) -> None:
    short = cli(tmp_path, "operators", "add", ADA, "--role", "admin", "--password-stdin",
                stdin="too short\n")  # fmt: skip
    assert short.exit_code == 2
    *logged, line = short.stderr.strip().splitlines()  # the memory transport's warning first
    assert line == "error: the password must be at least 12 characters long"
    assert all(" WARNING digest.config.runtime: [transport] kind = " in x for x in logged)
    assert "no operator" in cli(tmp_path, "operators", "disable", ADA).stderr
    assert "No operators yet" in cli(tmp_path, "operators", "list").stdout


def test_without_a_shared_credential_the_desk_opens_once_an_operator_exists(
    tmp_path: Path, clock: Clock
) -> None:
    runtime = desk_runtime(tmp_path, clock, shared=False)
    with TestClient(create_app(runtime), follow_redirects=False) as c:
        assert c.get("/admin/login").status_code == 404
        assert c.get("/admin/editions").status_code == 404
        added = cli(tmp_path, "operators", "add", ADA, "--role", "admin", "--password-stdin",
                    stdin=f"{OPERATOR_PASSWORD}\n", shared=False)  # fmt: skip
        assert added.exit_code == 0, added.output
        assert c.get("/admin/editions").status_code == 401
        sign_in(c, runtime, ADA)
        assert c.get("/admin/operators").status_code == 200
    runtime.close()
