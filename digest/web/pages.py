"""Web pages from ``templates/pages/*.html.j2``, through the instance's TemplateSet.

An instance overrides a page by putting a file of the same name in its own
``templates/pages/`` folder (Pelican-style, like the email templates). Autoescape
is on for ``*.html.j2``; undefined names raise.

Every page gets ``site`` (name, base_url, postal_address), ``root`` (the path the
app is mounted under) and ``title``. Error pages are deliberately generic: one
body for every bad link, whatever made it bad (tampered, expired, wrong purpose).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from digest.render.templates import TemplateSet
from digest.render.view import SiteView


@dataclass(frozen=True, slots=True)
class ErrorText:
    status: int
    title: str
    message: str


class Problem(Enum):
    """The error pages a reader can see; none names a cause a prober could use."""

    invalid_link = ErrorText(
        400,
        "This link does not work",
        "The link is not valid, or it has expired. Nothing was changed. If you wanted to "
        "subscribe, please sign up again; to unsubscribe or change preferences, use the "
        "links in your latest email.",
    )
    not_found = ErrorText(404, "Page not found", "There is no page at this address.")
    too_many = ErrorText(
        429, "Too many requests", "Too many sign-ups from your network. Please try again later."
    )
    unavailable = ErrorText(
        503,
        "Temporarily unavailable",
        "We cannot answer right now. Nothing was changed. Please try again in a few minutes.",
    )
    server_error = ErrorText(
        500, "Something went wrong", "We could not complete this request. Please try again later."
    )


class Pages:
    """Renders the page templates with the context every page shares."""

    def __init__(self, templates: TemplateSet, site: SiteView) -> None:
        self.templates = templates
        self.site = site

    def html(self, request: Request | None, name: str, **context: Any) -> str:
        """Render ``pages/<name>.html.j2``. Raises RenderError for a broken template."""
        root = str(request.scope.get("root_path", "")) if request is not None else ""
        values: dict[str, Any] = {"site": self.site, "root": root.rstrip("/"), **context}
        return self.templates.render(f"pages/{name}.html.j2", values)

    def page(
        self,
        request: Request | None,
        name: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        return HTMLResponse(
            self.html(request, name, **context), status_code=status, headers=headers
        )

    def problem(
        self, request: Request | None, problem: Problem, *, headers: Mapping[str, str] | None = None
    ) -> HTMLResponse:
        text = problem.value
        return self.page(
            request,
            "error",
            status=text.status,
            headers=headers,
            title=text.title,
            message=text.message,
        )
