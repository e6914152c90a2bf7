"""config.toml: typed, frozen, strict about keys; secrets only from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest import config
from digest.config.registry import build_feed, build_transport
from digest.errors import ConfigError
from tests.support import write_config


def test_repository_config_loads_with_paths_relative_to_the_file() -> None:
    repo = Path(__file__).resolve().parent.parent
    cfg = config.load(repo / "config.toml", environ={})
    assert cfg.site.timezone == "Europe/Berlin"
    assert cfg.database.url == f"sqlite:///{repo / 'digest.db'}"
    assert cfg.feed.kind == "files"
    assert cfg.feed.options["path"] == repo / "examples" / "feed.json"
    assert cfg.transport.options["path"] == repo / "outbox"
    assert cfg.paths.templates == repo / "templates"
    with pytest.raises(AttributeError):
        cfg.site.name = "x"  # type: ignore[misc]


def test_mistyped_key_names_key_section_and_file_with_a_hint(tmp_path: Path) -> None:
    path = write_config(tmp_path, site={"timezon": "UTC"})
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    message = str(info.value)
    assert "'timezon'" in message and "[site]" in message and str(path) in message
    assert "did you mean 'timezone'" in message


@pytest.mark.parametrize(
    ("sections", "fragment"),
    [
        ({"edition": {"max_comparisons": "ten"}}, "[edition] key 'max_comparisons'"),
        ({"send": {"unknown_policy": "maybe"}}, "must be one of"),
        ({"site": {"timezone": "Mars/Olympus"}}, "unknown time zone"),
        ({"site": {"postal_address": "  "}}, "postal_address"),
        ({"bogus": {"x": 1}}, "unknown section [bogus]"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, sections: dict, fragment: str) -> None:
    path = write_config(tmp_path, **sections)
    with pytest.raises(ConfigError, match=None) as info:
        config.load(path, environ={})
    assert fragment in str(info.value)


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config PATH or set DIGEST_CONFIG"):
        config.load(tmp_path / "nope.toml", environ={})


def test_digest_config_env_is_the_default(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    cfg = config.load(None, environ={"DIGEST_CONFIG": str(path)})
    assert cfg.source == path.resolve()


def test_secrets_come_from_the_environment_only(tmp_path: Path) -> None:
    path = write_config(tmp_path, transport={"kind": "smtp", "host": "127.0.0.1", "port": 2525})
    env = {
        "DIGEST_SECRET_KEY": "new-key, old-key",
        "DIGEST_SMTP_PASSWORD": "s3cret",
        "DIGEST_DATABASE_URL": "sqlite:////tmp/other.db",
    }
    cfg = config.load(path, environ=env)
    assert cfg.secret_keys == ("new-key", "old-key")
    assert cfg.database.url == "sqlite:////tmp/other.db"
    transport = build_transport(cfg.transport, cfg.env)
    assert getattr(transport, "_password", None) == "s3cret" or "s3cret" in repr(vars(transport))


def test_a_password_in_the_file_is_refused(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, transport={"kind": "smtp", "host": "127.0.0.1", "password": "oops"}
    )
    with pytest.raises(ConfigError, match=r"'password'.*DIGEST_SMTP_PASSWORD"):
        config.load(path, environ={})


def test_adapter_keys_are_checked_against_the_kind(tmp_path: Path) -> None:
    path = write_config(tmp_path, feed={"kind": "http", "url": "https://x.test/f", "urll": "y"})
    cfg = config.load(path, environ={})
    with pytest.raises(ConfigError, match="did you mean 'url'"):
        build_feed(cfg.feed, cfg.env)
    path = write_config(tmp_path, feed={"kind": "rss"})
    cfg = config.load(path, environ={})
    with pytest.raises(ConfigError, match="unknown kind 'rss'"):
        build_feed(cfg.feed, cfg.env)


def test_a_key_in_the_wrong_section_says_where_it_belongs(tmp_path: Path) -> None:
    path = write_config(tmp_path, edition={"unknown_policy": "skip"})
    with pytest.raises(ConfigError, match=r"it belongs in \[send\]"):
        config.load(path, environ={})


@pytest.mark.parametrize(
    ("email", "key"),
    [
        ({"from": "not an address"}, "'from'"),
        ({"reply_to": "two@example.com, addresses@example.com"}, "'reply_to'"),
        ({"list_id": "no angle brackets or dots"}, "'list_id'"),
    ],
)
def test_bad_email_headers_fail_when_the_runtime_opens(
    tmp_path: Path, email: dict, key: str
) -> None:
    from digest.config.runtime import Runtime

    cfg = config.load(write_config(tmp_path, email=email), environ={})
    with pytest.raises(ConfigError, match=f"\\[email\\] key {key}"):
        Runtime.open(cfg)


def test_database_errors_never_show_the_password(tmp_path: Path) -> None:
    from digest.store.db import make_engine

    with pytest.raises(ConfigError) as info:
        make_engine("nosuchdriver://user:hunter2@db.example/x")
    assert "hunter2" not in str(info.value)


# --- issue 12: https base_url, Feedback-ID shape, transactional_from ------------------


def test_http_base_url_is_refused_unless_insecure_is_allowed(tmp_path: Path) -> None:
    path = write_config(tmp_path, site={"base_url": "http://127.0.0.1:8000"})
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    message = str(info.value)
    assert "[site] key 'base_url'" in message and str(path) in message and "\n" not in message
    assert "https" in message and "allow_insecure_base_url = true" in message
    path = write_config(
        tmp_path, site={"base_url": "http://127.0.0.1:8000", "allow_insecure_base_url": True}
    )
    assert config.load(path, environ={}).site.base_url == "http://127.0.0.1:8000"
    for bad in ("ftp://example.com", "https://", "digest.example.com"):
        path = write_config(tmp_path, site={"base_url": bad, "allow_insecure_base_url": True})
        with pytest.raises(ConfigError, match=r"\[site\] key 'base_url'"):
            config.load(path, environ={})


@pytest.mark.parametrize(
    "value", ["verdicts", "weekly:digest:verdicts", "w48:list:mail:verdicts", "::verdicts"]
)
def test_feedback_ids_of_gmails_shape_load(tmp_path: Path, value: str) -> None:
    path = write_config(tmp_path, email={"from": "W <d@test.example>", "feedback_id": value})
    assert config.load(path, environ={}).email.feedback_id == value


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("a:b:c:d:verdicts", "at most 4 fields"),
        ("weekly:digest:", "SenderId"),
        ("weekly:", "SenderId"),
        ("", "SenderId"),
        ("weekly digest:verdicts", "without spaces"),
        ("weekly:dig\test:verdicts", "control characters"),
        ("weekly:digést:verdicts", "printable ASCII"),
    ],
)
def test_a_feedback_id_not_of_gmails_shape_is_named(
    tmp_path: Path, value: str, fragment: str
) -> None:
    path = write_config(tmp_path, email={"from": "W <d@test.example>", "feedback_id": value})
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    message = str(info.value)
    assert f"[email] key 'feedback_id' in {path}" in message and fragment in message


def test_transactional_from_defaults_to_from_and_is_checked(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    email = config.load(path, environ={}).email
    assert email.transactional_from is None
    assert email.transactional_header == "Test Weekly <digest@test.example>"
    own = "Test Weekly <hello@test.example>"
    path = write_config(tmp_path, email={"transactional_from": own})
    assert config.load(path, environ={}).email.transactional_header == own
    for bad in ("not an address", "a@x.example, b@x.example"):
        path = write_config(tmp_path, email={"transactional_from": bad})
        with pytest.raises(ConfigError) as info:
            config.load(path, environ={})
        assert f"[email] key 'transactional_from' in {path}" in str(info.value)
