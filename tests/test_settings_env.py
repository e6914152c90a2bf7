"""DIGEST_<SECTION>__<KEY> environment overrides (issue 14): typed like the file, beating
it, and refused by name when wrong; other DIGEST_* variables are never settings."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from digest import config
from digest.errors import ConfigError
from tests.support import write_config


def load(tmp_path: Path, env: dict[str, str], **sections: dict) -> config.Config:
    return config.load(write_config(tmp_path, **sections), environ=env)


def refused(tmp_path: Path, env: dict[str, str], **sections: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env, **sections)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_an_integer_override_becomes_an_int(tmp_path: Path) -> None:
    cfg = load(tmp_path, {"DIGEST_EDITION__MAX_COMPARISONS": "1"})
    assert cfg.edition.max_comparisons == 1 and isinstance(cfg.edition.max_comparisons, int)


def test_a_number_override_becomes_a_float(tmp_path: Path) -> None:
    cfg = load(
        tmp_path, {"DIGEST_EDITION__APPROVAL_HOURS": "0.5", "DIGEST_SEND__LEASE_SECONDS": "30"}
    )
    assert cfg.edition.approval_hours == 0.5 and cfg.send.lease_seconds == 30


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False), ("1", True)])
def test_a_boolean_override(tmp_path: Path, text: str, value: bool) -> None:
    cfg = load(tmp_path, {"DIGEST_EDITION__REQUIRE_APPROVAL": text})
    assert cfg.edition.require_approval is value


def test_a_list_override_is_json(tmp_path: Path) -> None:
    cfg = load(tmp_path, {"DIGEST_WEB__TRUSTED_PROXIES": '["127.0.0.1", "10.0.0.0/8"]'})
    assert cfg.web.trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
    message = refused(tmp_path, {"DIGEST_WEB__TRUSTED_PROXIES": "127.0.0.1"})
    assert "[web] key 'trusted_proxies'" in message
    assert "DIGEST_WEB__TRUSTED_PROXIES" in message and "expected a list" in message


def test_a_string_override_stays_a_string(tmp_path: Path) -> None:
    cfg = load(tmp_path, {"DIGEST_SITE__NAME": "2024", "DIGEST_EMAIL__FROM": "W <w@test.example>"})
    assert cfg.site.name == "2024" and cfg.email.from_ == "W <w@test.example>"


def test_adapter_keys_are_overridden_and_decoded(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        {
            "DIGEST_FEED__KIND": "http",
            "DIGEST_FEED__URL": "https://feed.test.example/v1",
            "DIGEST_FEED__MAX_BYTES": "2048",
            "DIGEST_TRANSPORT__PATH": "elsewhere",
        },
    )
    assert cfg.feed.kind == "http"
    assert cfg.feed.options["url"] == "https://feed.test.example/v1"
    assert cfg.feed.options["max_bytes"] == 2048  # JSON where it is JSON
    assert cfg.feed.options["path"]  # the file's key is kept beside the overrides
    assert cfg.transport.options["path"] == (tmp_path / "elsewhere").resolve()  # config folder


def test_a_webhook_table_is_overridden(tmp_path: Path) -> None:
    env = {
        "DIGEST_WEBHOOKS__PROVIDERS": '["ses"]',
        "DIGEST_WEBHOOKS__SES__AUTO_CONFIRM": "true",
        "DIGEST_WEBHOOKS__SOFT_BOUNCE_LIMIT": "5",
    }
    hooks = load(tmp_path, env).webhooks
    assert hooks.providers == ("ses",) and hooks.auto_confirm == frozenset({"ses"})
    assert hooks.soft_bounce_limit == 5 and hooks.adapters["ses"].kind == "ses"


def test_the_environment_beats_the_file(tmp_path: Path) -> None:
    sections = {"edition": {"max_comparisons": 5, "max_age_days": 7}}
    cfg = load(tmp_path, {"DIGEST_EDITION__MAX_COMPARISONS": "2"}, **sections)
    assert (cfg.edition.max_comparisons, cfg.edition.max_age_days) == (2, 7)
    assert load(tmp_path, {}, **sections).edition.max_comparisons == 5


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"DIGEST_EDITION__MAX_COMPARISONS": "ten"}, "expected a whole number, got 'ten'"),
        ({"DIGEST_EDITION__MAX_COMPARISONS": "0"}, "must be greater than zero, got 0"),
        ({"DIGEST_SEND__UNKNOWN_POLICY": "maybe"}, "must be one of 'resend', 'skip'"),
        ({"DIGEST_EDITION__REQUIRE_APPROVAL": "maybe"}, "expected true or false"),
    ],
)
def test_a_bad_value_names_the_variable(tmp_path: Path, env: dict[str, str], fragment: str) -> None:
    message = refused(tmp_path, env)
    (name,) = env
    section = name.split("__")[0].removeprefix("DIGEST_").lower()
    assert f"[{section}] key '" in message and f"environment variable {name}" in message
    assert fragment in message


def test_value_checks_name_the_variable_too(tmp_path: Path) -> None:
    message = refused(tmp_path, {"DIGEST_SITE__BASE_URL": "http://127.0.0.1:8000"})
    assert "[site] key 'base_url' in environment variable DIGEST_SITE__BASE_URL" in message
    message = refused(tmp_path, {"DIGEST_SITE__TIMEZONE": "Mars/Olympus"})
    assert "DIGEST_SITE__TIMEZONE" in message and "unknown time zone" in message


def test_a_misspelt_key_is_refused_naming_the_variable(tmp_path: Path) -> None:
    message = refused(tmp_path, {"DIGEST_EDITION__MAX_COMPARSIONS": "3"})
    assert "'max_comparsions'" in message and "[edition]" in message
    assert "DIGEST_EDITION__MAX_COMPARSIONS" in message
    assert "did you mean 'max_comparisons'" in message
    message = refused(tmp_path, {"DIGEST_EDITION__UNKNOWN_POLICY": "skip"})
    assert "it belongs in [send]" in message


def test_a_misspelt_section_is_refused_naming_the_variable(tmp_path: Path) -> None:
    message = refused(tmp_path, {"DIGEST_EDITON__MAX_COMPARISONS": "3"})
    assert "unknown section [editon]" in message and "DIGEST_EDITON__MAX_COMPARISONS" in message
    assert "did you mean 'edition'" in message


def test_secret_variables_are_not_settings(tmp_path: Path) -> None:
    env = {
        "DIGEST_SECRET_KEY": "k1,k2",
        "DIGEST_SMTP_PASSWORD": "pw",
        "DIGEST_FEED_TOKEN": "tok",
        "DIGEST_ADMIN_PASSWORD": "admin",
        "DIGEST_FOO": "whatever",
        "DIGEST_EDITION": '{"max_comparisons": 1}',  # no "__": not an override either
    }
    cfg = load(tmp_path, env)
    assert cfg.secret_keys == ("k1", "k2")
    assert cfg.edition.max_comparisons == 8
    assert cfg.env["DIGEST_FEED_TOKEN"] == "tok"  # handed to the adapters, as before
    assert "tok" not in repr(cfg.feed) and "pw" not in repr(cfg.transport)


def test_a_secret_cannot_be_set_as_an_adapter_key(tmp_path: Path) -> None:
    message = refused(tmp_path, {"DIGEST_TRANSPORT__PASSWORD": "oops"})
    assert "[transport] key 'password'" in message and "DIGEST_TRANSPORT__PASSWORD" in message
    assert "DIGEST_SMTP_PASSWORD" in message and "oops" not in message


def test_digest_config_is_the_file_not_a_setting(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    cfg = config.load(None, environ={"DIGEST_CONFIG": str(path)})
    assert cfg.source == path.resolve()


def test_names_are_case_insensitive_and_empty_values_ignored(tmp_path: Path) -> None:
    env = {"digest_edition__max_comparisons": "3", "DIGEST_EDITION__MAX_AGE_DAYS": ""}
    cfg = load(tmp_path, env)
    assert (cfg.edition.max_comparisons, cfg.edition.max_age_days) == (3, 14)


def test_only_the_given_environ_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_EDITION__MAX_COMPARISONS", "ten")
    assert load(tmp_path, {}).edition.max_comparisons == 8
    with pytest.raises(ConfigError, match="DIGEST_EDITION__MAX_COMPARISONS"):
        config.load(write_config(tmp_path))  # environ=None: os.environ


def test_parse_takes_overrides_from_its_environ(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    env = {"DIGEST_EDITION__MAX_COMPARISONS": "4"}
    assert config.parse(data, source=path, environ=env).edition.max_comparisons == 4
