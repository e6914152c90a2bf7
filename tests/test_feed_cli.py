"""digest feed-schema and digest validate-feed, in process (digest/cli/feed.py)."""

from __future__ import annotations

import copy
import json
from importlib.resources import files
from pathlib import Path

import typer
from typer.testing import CliRunner

from digest.cli import feed
from tests.feed_servers import feed_server, json_body, page

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "feed.json"

app = typer.Typer()
feed.register(app)


@app.callback()
def _root() -> None:
    """Keep the commands as subcommands."""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_feed_schema_prints_the_packaged_schema() -> None:
    code, output = run("feed-schema")
    assert code == 0
    packaged = files("digest").joinpath("schema", "feed-v1.schema.json").read_text("utf-8")
    assert json.loads(output) == json.loads(packaged)


def test_example_feed_is_valid() -> None:
    code, output = run("validate-feed", str(EXAMPLE))
    count = len(json.loads(EXAMPLE.read_text("utf-8"))["comparisons"])
    assert code == 0, output
    assert output.strip().splitlines() == [f"{count} comparisons, {count} valid, 0 with problems"]


def test_every_bad_field_is_named(tmp_path: Path) -> None:
    doc = json.loads(EXAMPLE.read_text("utf-8"))
    first, second = copy.deepcopy(doc["comparisons"][0]), copy.deepcopy(doc["comparisons"][0])
    first["tools"][0]["pricing"] = "cheap"
    first["published_at"] = "yesterday"
    second["id"] = "second-one"
    second["tools"][1]["panel_ship_pct"] = 140
    doc["comparisons"] = [first, second]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc), "utf-8")

    code, output = run("validate-feed", str(bad))

    lines = output.strip().splitlines()
    assert code == 1, output
    ident = first["id"]
    assert len(lines) == 4, output
    assert any(
        line.startswith(f"comparison '{ident}' (item 1): tools[0].pricing: 'cheap'")
        for line in lines
    )
    assert any(line.startswith(f"comparison '{ident}' (item 1): published_at: ") for line in lines)
    assert any(
        line.startswith("comparison 'second-one' (item 2): tools[1].panel_ship_pct: 140")
        for line in lines
    )
    assert lines[-1] == "2 comparisons, 0 valid, 2 with problems"


def test_each_problem_is_named_once(tmp_path: Path) -> None:
    """A tool missing its required fields: each field once, though several schema
    rules require it (the first version printed 'tools[0].key: is missing' 4 times)."""
    doc = json.loads(EXAMPLE.read_text("utf-8"))
    doc["comparisons"] = [{"id": "", "title": 5, "tools": [{"name": "x"}]}]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc), "utf-8")

    code, output = run("validate-feed", str(bad))

    lines = output.strip().splitlines()
    assert code == 1, output
    assert len(lines) == len(set(lines)), output
    assert sum("tools[0].key: is missing" in line for line in lines) == 1, output
    assert sum(line.endswith("url: is missing") for line in lines) == 1, output


def test_document_level_problems_are_all_listed(tmp_path: Path) -> None:
    bad = tmp_path / "doc.json"
    bad.write_text(json.dumps({"version": "2", "next_url": 3, "comparisons": []}), "utf-8")
    code, output = run("validate-feed", str(bad))
    assert code == 1
    text = output.replace("\n", " ")
    assert "'version' is \"2\"" in text
    assert "'next_url' must be a string or null" in text
    assert "'generated_at' must be" in text


def test_missing_file_is_one_line_exit_2(tmp_path: Path) -> None:
    code, output = run("validate-feed", str(tmp_path / "nope.json"))
    assert code == 2
    assert len(output.strip().splitlines()) == 1
    assert "cannot read" in output and "no such file" in output
    assert "Traceback" not in output


def test_not_json_is_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{not json", "utf-8")
    code, output = run("validate-feed", str(junk))
    assert code == 2
    assert len(output.strip().splitlines()) == 1
    assert "not valid JSON" in output


def test_url_on_loopback_validates() -> None:
    # The URL given is the operator's choice, like [feed] url: its own origin may be
    # loopback; only redirects or other origins go through the address guard.
    with feed_server() as server:
        url = server.on("/feed.json", json_body(page("a-vs-b", "c-vs-d")))
        code, output = run("validate-feed", url)
    assert code == 0, output
    assert output.strip() == "2 comparisons, 2 valid, 0 with problems"


def test_unreachable_url_is_exit_2() -> None:
    with feed_server() as server:
        url = server.url("/missing.json")
        code, output = run("validate-feed", url, "--timeout", "5")
    assert code == 2
    assert len(output.strip().splitlines()) == 1
    assert "404" in output
