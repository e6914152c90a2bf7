"""The Jinja environment: instance templates override packaged defaults one file at a time.

Pelican-style: an instance ``templates/`` folder (``Config.paths.templates``) is
searched first, then the packaged defaults. The defaults live at
``digest/default_templates/`` in an installed wheel (pyproject force-includes the
repository's ``templates/`` there) and at ``<repo>/templates`` in an editable
checkout.

Rules every template can rely on:

- autoescape is ON for ``*.mjml.j2`` / ``*.html.j2`` (and ``.mjml`` / ``.html``),
  OFF for ``*.txt.j2`` / ``*.txt``, ON for any other name;
- undefined names raise (``StrictUndefined``) instead of printing nothing;
- feed text is only ever *data* in the context, never template source;
- every template, packaged or instance, runs in Jinja's
  :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (see :class:`_Sandbox`):
  no ``_``/dunder attributes, no mutating list/dict/set methods, no
  ``str.format`` escapes, and nothing that leads to a module, a class, ``os``, the
  database layer, the runtime or the configuration (``Config.env`` holds the
  ``DIGEST_*`` secrets). A refused access raises at once; the context holds plain
  data and view objects only (checked on every render).

Every Jinja failure (missing template, syntax error, undefined name, error while
rendering) surfaces as :class:`~digest.errors.RenderError` naming the template and,
where Jinja knows it, the line, on one line. A sandbox refusal says "refused by the
template sandbox" and names the attribute and the type, never a value.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from digest.errors import RenderError

_ESCAPED = ("mjml.j2", "html.j2", "mjml", "html", "htm")
_UNESCAPED = ("txt.j2", "txt")
# Values a template must never hold, by the module that defines them (or, for a
# function, where it lives): the process, the database layer, the runtime and the
# configuration (``Config.env`` carries the DIGEST_* secrets).
_PROCESS_MODULES = (
    "os",
    "posix",
    "nt",
    "sys",
    "subprocess",
    "shutil",
    "importlib",
    "socket",
    "sqlalchemy",
    "sqlmodel",
    "digest.config.runtime",
    "digest.config",
    "digest.store.db",
)


_PROCESS_PREFIXES = tuple(f"{m}." for m in _PROCESS_MODULES)


def _from_process_module(module: object) -> bool:
    return isinstance(module, str) and (
        module in _PROCESS_MODULES or module.startswith(_PROCESS_PREFIXES)
    )


def _not_plain(value: object) -> str | None:
    """Why ``value`` may not reach a template, or None for plain data / view objects."""
    if isinstance(value, types.ModuleType):
        return "a module"
    if isinstance(value, type):
        return "a class"
    if isinstance(value, types.BuiltinFunctionType) and isinstance(
        getattr(value, "__self__", None), types.ModuleType
    ):
        return "a module's function"
    if isinstance(value, types.FunctionType) and _from_process_module(value.__module__):
        return "a function of the process"
    if _from_process_module(type(value).__module__):
        return f"a {type(value).__module__} object"
    return None


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, stricter in two ways:

    - an unsafe attribute raises :class:`SecurityError` *at once* (Jinja's default
      returns an Undefined that only fails when used: ``{% if x.__class__ is
      defined %}`` or ``| default`` would let a template probe quietly);
    - beyond Jinja's rules (no ``_`` names, no internals, no mutating methods), no
      attribute may yield a module, a class, a module's function, or an object of
      the process, database, runtime or configuration modules, so no path through
      a view object (say an ORM row's ``metadata``) leads there.
    """

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return super().is_safe_attribute(obj, attr, value) and _not_plain(value) is None

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )


def default_templates_dir() -> Path:
    """Return the packaged default templates folder (wheel first, then checkout).

    Raises :class:`RenderError` when neither exists (a broken installation).
    """
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "default_templates", here.parents[2] / "templates"):
        if candidate.is_dir():
            return candidate
    raise RenderError(
        "the packaged default templates are missing: looked for "
        f"{here.parents[1] / 'default_templates'} and {here.parents[2] / 'templates'}"
    )


class TemplateSet:
    """The templates of one instance: ``instance_dir`` (optional) over the defaults.

    ``defaults_dir`` is for tests and tools; normally the packaged folder is used.
    """

    def __init__(self, instance_dir: Path | None, *, defaults_dir: Path | None = None) -> None:
        self.defaults_dir = defaults_dir or default_templates_dir()
        self.instance_dir = instance_dir
        loaders: list[jinja2.BaseLoader] = []
        if instance_dir is not None:
            loaders.append(jinja2.FileSystemLoader(instance_dir))
        loaders.append(jinja2.FileSystemLoader(self.defaults_dir))
        self.env: jinja2.Environment = _Sandbox(
            loader=jinja2.ChoiceLoader(loaders),
            # HTML and MJML escape; text (subject, plain part) does not; any other
            # name escapes too: the safe mistake is a stray "&amp;", never markup.
            autoescape=jinja2.select_autoescape(
                enabled_extensions=_ESCAPED,
                disabled_extensions=_UNESCAPED,
                default_for_string=False,
                default=True,
            ),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )

    def search_path(self) -> tuple[Path, ...]:
        """The folders searched, in order (for messages and ``digest preview``)."""
        first = (self.instance_dir,) if self.instance_dir is not None else ()
        return (*first, self.defaults_dir)

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        """Render template ``name`` with ``context``.

        Raises :class:`RenderError` naming the template (and line, where known) when
        the template is missing, does not parse, fails while rendering, or is refused
        by the sandbox; and when ``context`` holds anything but plain data.
        """
        for key, value in context.items():
            why = _not_plain(value)
            if why is not None:
                raise RenderError(
                    f"template '{name}': the context value '{key}' is {why}; "
                    "templates get plain data only"
                )
        try:
            template = self.env.get_template(name)
            return template.render(context)
        except jinja2.TemplateNotFound as exc:
            where = ", ".join(str(p) for p in self.search_path())
            raise RenderError(
                f"template '{exc.name}' not found (needed by '{name}'; looked in {where})"
            ) from exc
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(
                _one_line(
                    f"template '{exc.name or name}' line {exc.lineno}: syntax error: {exc.message}"
                )
            ) from exc
        except RenderError:
            raise
        except Exception as exc:  # translated at the seam: any failure inside Jinja
            raise RenderError(_describe_runtime_error(name, exc)) from exc


def _describe_runtime_error(name: str, exc: Exception) -> str:
    """Name the innermost template frame of ``exc`` (Jinja rewrites tracebacks so
    that template frames carry the template's file name and line)."""
    where = f"template '{name}'"
    frame = _innermost_template_frame(exc.__traceback__)
    if frame is not None:
        filename, lineno = frame
        where = f"template '{Path(filename).name}' ({filename}) line {lineno}"
    if isinstance(exc, SecurityError):
        kind = "refused by the template sandbox"
    elif isinstance(exc, jinja2.UndefinedError):
        kind = "undefined name"
    else:
        kind = type(exc).__name__
    return _one_line(f"{where}: {kind}: {exc}")


def _one_line(text: str) -> str:
    """Runs of whitespace (newlines included) become one space: a CLI error line."""
    return " ".join(text.split())


def _innermost_template_frame(tb: TracebackType | None) -> tuple[str, int] | None:
    found: tuple[str, int] | None = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".j2", ".html", ".mjml", ".txt")):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found
