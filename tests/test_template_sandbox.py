"""Templates cannot reach the process (issue 13).

Every template, packaged or instance, renders in Jinja's immutable sandbox. An
instance template that reaches for Python internals, the environment, ``os``, the
database or the configuration fails with a one-line RenderError naming the file
and the line; nothing of the environment (here a planted ``DIGEST_ADMIN_PASSWORD``)
appears in any output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from digest import config as config_mod
from digest.cli import app as cli_app
from digest.config.runtime import Runtime
from digest.errors import RenderError
from digest.render.digest import render_digest
from digest.render.templates import TemplateSet
from digest.store.models import Edition
from tests.support import run_digest
from tests.test_admin import compose, open_runtime
from tests.test_render import SITE, sample_comparisons

SECRET = "planted-Secret-4f1c9e0b7a"  # the value of DIGEST_ADMIN_PASSWORD in these tests

# (the template line, what the error must say). Each is placed on line 3.
ATTACKS: list[tuple[str, str]] = [
    ("{{ ''.__class__.__mro__ }}", "access to attribute '__class__' of 'str' object"),
    ("{{ cycler.__init__.__globals__.os.environ }}", "access to attribute '__init__'"),
    ("{{ lipsum.__globals__ }}", "access to attribute '__globals__' of 'function' object"),
    ("{{ self._TemplateReference__context }}", "'_TemplateReference__context'"),
    ("{{ [].__class__.__base__.__subclasses__() }}", "'__class__' of 'list' object"),
    ("{{ range.__self__ }}", "__self__"),
    ("{{ ''|attr('__class__') }}", "'__class__' of 'str' object"),
    ("{{ site['__class__'] }}", "'__class__' of 'SiteView' object"),
    ("{{ ['x']|map(attribute='__class__')|list }}", "'__class__' of 'str' object"),
    ('{{ "{0.__class__}".format("") }}', "'__class__' of 'str' object"),
    ("{{ '{x.__class__}'.format_map({'x': ''}) }}", "'__class__' of 'str' object"),
    ("{{ '{0.__class__.__mro__}'.format(site) }}", "'__class__' of 'SiteView' object"),
    ("{% set ns = namespace() %}{% set ns.__init__ = 1 %}{{ ns.__init__ }}", "'__init__'"),
    ("{% set ns = namespace(items=[]) %}{{ ns.items.append(1) }}", "'append' of 'list'"),
    ("{{ edition.comparisons.__class__ }}", "'__class__' of 'tuple' object"),
    # Quiet probes must fail too, not answer "undefined" or fall back to a default.
    ("{% if ''.__class__ is defined %}yes{% endif %}", "'__class__' of 'str' object"),
    ("{{ ''.__class__ | default('harmless') }}", "'__class__' of 'str' object"),
    ("{{ ({}).update(a=1) }}", "'update' of 'dict' object"),
]
# Not refused by the sandbox: these names are simply not in the context, or Jinja
# itself refuses the assignment.
NOT_THERE: list[tuple[str, str]] = [
    ("{{ config }}", "undefined name: 'config' is undefined"),
    ("{{ env }}", "undefined name: 'env' is undefined"),
    ("{{ rt.config.env }}", "undefined name: 'rt' is undefined"),
    ("{{ os.environ }}", "undefined name: 'os' is undefined"),
    ("{% set s = site %}{% set s.name = 'x' %}", "cannot assign attribute on non-namespace"),
]


@pytest.fixture(autouse=True)
def planted_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_ADMIN_PASSWORD", SECRET)


def instance_with(tmp_path: Path, name: str, line: str) -> Path:
    """An instance templates folder whose ``name`` holds ``line`` on line 3."""
    folder = tmp_path / "templates"
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(
        "{# an instance override #}\n<mjml><mj-body>\n" + line + "\n</mj-body></mjml>\n",
        encoding="utf-8",
    )
    return folder


def render_with(folder: Path) -> None:
    render_digest(
        TemplateSet(folder),
        **SITE,
        edition_key="2026-W48",
        comparisons=sample_comparisons(),
        max_html_bytes=1_000_000,
    )


def assert_one_line_naming(message: str, folder: Path, name: str, line: int) -> None:
    assert "\n" not in message and "\r" not in message
    assert f"template '{Path(name).name}' ({folder / name}) line {line}:" in message
    assert SECRET not in message


@pytest.mark.parametrize(("line", "says"), ATTACKS, ids=[a for a, _ in ATTACKS])
def test_attacks_fail_with_one_line_naming_file_and_line(
    tmp_path: Path, line: str, says: str
) -> None:
    folder = instance_with(tmp_path, "digest.mjml.j2", line)
    with pytest.raises(RenderError) as caught:
        render_with(folder)
    message = str(caught.value)
    assert_one_line_naming(message, folder, "digest.mjml.j2", 3)
    assert says in message
    if "__self__" not in line:  # a plain function has no __self__: just undefined
        assert "refused by the template sandbox" in message


@pytest.mark.parametrize(("line", "says"), NOT_THERE, ids=[a for a, _ in NOT_THERE])
def test_config_env_and_os_are_not_in_the_context(tmp_path: Path, line: str, says: str) -> None:
    folder = instance_with(tmp_path, "digest.mjml.j2", line)
    with pytest.raises(RenderError) as caught:
        render_with(folder)
    assert_one_line_naming(str(caught.value), folder, "digest.mjml.j2", 3)
    assert says in str(caught.value)


def test_printing_a_dunder_is_refused_with_the_exact_message(tmp_path: Path) -> None:
    folder = instance_with(tmp_path, "digest.mjml.j2", "{{ ''.__class__ }}")
    with pytest.raises(RenderError) as caught:
        render_with(folder)
    assert str(caught.value) == (
        f"template 'digest.mjml.j2' ({folder / 'digest.mjml.j2'}) line 3: refused by the "
        "template sandbox: access to attribute '__class__' of 'str' object is unsafe"
    )


def test_an_imported_partial_is_named_not_the_importer(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    (folder / "partials").mkdir(parents=True)
    (folder / "partials" / "tool.mjml.j2").write_text(
        "{# an instance override #}\n{% macro tool_block(tool, padding, web_copy=False) %}\n"
        "{{ tool.__class__ }}\n{% endmacro %}\n",
        encoding="utf-8",
    )
    with pytest.raises(RenderError) as caught:
        render_with(folder)  # packaged digest → packaged comparison → this macro
    assert_one_line_naming(str(caught.value), folder, "partials/tool.mjml.j2", 3)
    assert "'__class__' of 'ToolView' object" in str(caught.value)


def test_the_subject_and_text_templates_are_sandboxed_too(tmp_path: Path) -> None:
    for name in ("subject.txt.j2", "digest.txt.j2"):
        folder = instance_with(tmp_path / name, name, "{{ site.__class__ }}")
        with pytest.raises(RenderError, match="refused by the template sandbox") as caught:
            render_with(folder)
        assert_one_line_naming(str(caught.value), folder, name, 3)


def test_packaged_templates_render_in_the_sandbox() -> None:
    templates = TemplateSet(None)
    assert templates.env.sandboxed
    digest = render_digest(
        templates,
        **SITE,
        edition_key="2026-W48",
        comparisons=sample_comparisons(),
        max_html_bytes=1_000_000,
    )
    assert digest.subject and "Lumen Notebook" in "".join(map(str, digest.text))


def test_legitimate_jinja_still_works(tmp_path: Path) -> None:
    (tmp_path / "t.txt.j2").write_text(
        "{% set ns = namespace(n=0) %}{% for c in items %}{% set ns.n = ns.n + c %}{% endfor %}"
        "{{ ns.n }} {{ '{:,}'.format(1234567) }} {{ '%.1f' | format(2.25) }} "
        "{{ counts.get('a', 0) }} {{ range(3) | list }} {{ when.strftime('%Y') }} "
        "{{ 'a-b'.split('-') | join('+') }} {{ cycler('x', 'y').next() }}",
        encoding="utf-8",
    )
    from datetime import date

    context = {"items": [1, 2, 3], "counts": {"a": 7}, "when": date(2026, 11, 23)}
    text = TemplateSet(tmp_path).render("t.txt.j2", context)
    assert text == "6 1,234,567 2.2 7 [0, 1, 2] 2026 a+b x"


def test_an_orm_row_leads_nowhere(tmp_path: Path) -> None:
    """The desk's pages show Edition rows: their SQLAlchemy side is out of reach."""
    for line, says in [
        ("{{ e.key }}", None),
        ("{{ e.metadata }}", "access to attribute 'metadata' of 'Edition' object is unsafe"),
        ("{{ e.metadata.clear() }}", "'metadata' of 'Edition'"),
        ("{{ e.metadata.tables }}", "'metadata' of 'Edition'"),
        ("{{ e.__table__ }}", "'__table__' of 'Edition'"),
        ("{{ e.model_validate }}", None),
    ]:
        (tmp_path / "p.html.j2").write_text(line, encoding="utf-8")
        render = TemplateSet(tmp_path).render
        if says is None:
            render("p.html.j2", {"e": Edition(key="2026-W48")})
            continue
        with pytest.raises(RenderError, match="refused by the template sandbox") as caught:
            render("p.html.j2", {"e": Edition(key="2026-W48")})
        assert says in str(caught.value)


class _Holder:
    def __init__(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)


def test_no_attribute_leads_to_a_module_class_or_the_process(tmp_path: Path) -> None:
    holder = _Holder(
        mod=os,
        cls=Path,
        fn=os.getenv,
        environ=os.environ,
        builtin=open,
        cfg=config_mod.Config,
        ok="fine",
    )
    (tmp_path / "ok.txt.j2").write_text("{{ h.ok }}", encoding="utf-8")
    assert TemplateSet(tmp_path).render("ok.txt.j2", {"h": holder}) == "fine"
    for attr in ("mod", "cls", "fn", "environ", "builtin", "cfg"):
        (tmp_path / "p.txt.j2").write_text(f"x\n{{{{ h.{attr} }}}}", encoding="utf-8")
        with pytest.raises(RenderError) as caught:
            TemplateSet(tmp_path).render("p.txt.j2", {"h": holder})
        message = str(caught.value)
        assert f"line 2: refused by the template sandbox: access to attribute '{attr}'" in message
        assert SECRET not in message


def test_the_context_may_hold_only_plain_data(tmp_path: Path) -> None:
    """A caller passing the runtime, the config (its ``env`` holds the DIGEST_*
    secrets), ``os`` or the engine is refused before the template runs."""
    path = tmp_path / "config.toml"
    rt = open_runtime(tmp_path)
    try:
        config = config_mod.load(path, environ={"DIGEST_ADMIN_PASSWORD": SECRET})
        assert config.env["DIGEST_ADMIN_PASSWORD"] == SECRET
        (tmp_path / "templates").mkdir(exist_ok=True)
        (tmp_path / "templates" / "t.txt.j2").write_text("{{ x }}", encoding="utf-8")
        templates = TemplateSet(tmp_path / "templates")
        for value in (rt, config, config.site, rt.engine, os, os.environ, os.system, Runtime):
            with pytest.raises(RenderError, match="context value 'x' is") as caught:
                templates.render("t.txt.j2", {"x": value})
            assert SECRET not in str(caught.value) and "\n" not in str(caught.value)
    finally:
        rt.close()


# -- digest preview (the CLI) ------------------------------------------------------------


def composed_instance(tmp_path: Path) -> str:
    rt = open_runtime(tmp_path, transport={"kind": "outbox", "path": "outbox"})
    try:
        return compose(rt)
    finally:
        rt.close()


CLI_ENV = {"DIGEST_SECRET_KEY": "test-key", "DIGEST_ADMIN_PASSWORD": SECRET, "COLUMNS": "400"}


def preview(tmp_path: Path, key: str, out_dir: Path) -> Result:
    """``digest preview --edition KEY --out OUT_DIR`` in this process (CliRunner)."""
    config = str(tmp_path / "config.toml")
    args = ["--config", config, "preview", "--edition", key, "--out", str(out_dir)]
    return CliRunner().invoke(cli_app, args, env=CLI_ENV)


@pytest.mark.parametrize(
    "line",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__.os.environ }}",
        "{{ lipsum.__globals__ }}",
        '{{ "{0.__class__}".format("") }}',
        "{{ config }}",
        "{{ env }}",
    ],
)
def test_digest_preview_fails_with_one_line(tmp_path: Path, line: str) -> None:
    key = composed_instance(tmp_path)
    folder = instance_with(tmp_path, "digest.mjml.j2", line)  # [paths] templates default
    out_dir = tmp_path / "preview"
    result = preview(tmp_path, key, out_dir)
    assert result.exit_code == 1, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    assert_one_line_naming(lines[0], folder, "digest.mjml.j2", 3)
    assert SECRET not in result.output
    assert not out_dir.exists()


def test_digest_preview_in_a_real_process(tmp_path: Path) -> None:
    key = composed_instance(tmp_path)
    folder = instance_with(tmp_path, "digest.mjml.j2", "{{ cycler.__init__.__globals__.os }}")
    env = dict(os.environ) | CLI_ENV
    out_dir = tmp_path / "preview"
    done = run_digest(
        tmp_path / "config.toml",
        "preview",
        "--edition",
        key,
        "--out",
        str(out_dir),
        env=env,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "refused by the template sandbox" in lines[0]
    assert_one_line_naming(lines[0], folder, "digest.mjml.j2", 3)
    assert SECRET not in done.stdout + done.stderr
    assert not out_dir.exists()


def test_digest_preview_with_a_harmless_override_still_works(tmp_path: Path) -> None:
    key = composed_instance(tmp_path)
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "subject.txt.j2").write_text("Custom {{ site.name }}\n", encoding="utf-8")
    out_dir = tmp_path / "preview"
    result = preview(tmp_path, key, out_dir)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    eml = (out_dir / f"{key}.eml").read_bytes()
    assert b"Subject: Custom Test Weekly" in eml and SECRET.encode() not in eml


# -- the web pages -------------------------------------------------------------------------


def test_a_page_override_that_reaches_out_gets_the_generic_error_page(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from digest.web.app import create_app

    folder = tmp_path / "templates" / "pages"
    folder.mkdir(parents=True)
    (folder / "subscribe.html.j2").write_text(
        "<p>\n{{ site.name }}\n{{ cycler.__init__.__globals__.os.environ }}\n", encoding="utf-8"
    )
    rt = open_runtime(tmp_path)
    try:
        with TestClient(create_app(rt), raise_server_exceptions=False) as client:
            page = client.get("/subscribe")
            assert page.status_code == 500
            assert "Something went wrong" in page.text
            assert SECRET not in page.text and "environ" not in page.text
            assert client.get("/archive").status_code == 200  # other pages unaffected
    finally:
        rt.close()
    assert SECRET not in caplog.text
