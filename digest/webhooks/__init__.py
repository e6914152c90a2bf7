"""Delivery events from email providers: the ``WEBHOOKS`` registry (built by
:func:`digest.config.registry.build_webhooks`). Adapters only: payload and
signature in, :class:`DeliveryEvent` out; no config, no database, no ledger.

``[webhooks] providers = ["postmark", …]`` enables one route per provider
(``POST /webhooks/{provider}``, see ``digest/web/webhooks.py``); each provider's
``[webhooks.<provider>]`` table becomes its adapter's constructor keywords (see
:mod:`digest.config.registry`), its secrets come from the environment (``secret_env``).
The contract every adapter keeps is in :mod:`digest.webhooks.base`; what the
events do to the ledger and the readers is :mod:`digest.delivery.events`.

Each provider lives in its own module, ``digest/webhooks/<provider>.py``, holding
one class whose ``name`` is the provider. A module that is not there (yet) leaves
its provider out of the registry instead of breaking every import of this package;
any other import error is raised.
"""

from __future__ import annotations

import importlib
import inspect
from typing import cast

from digest.webhooks.base import (
    DeliveryEvent,
    EventType,
    Verified,
    Webhook,
    WebhookRejected,
    WebhookRequest,
)

PROVIDERS = ("postmark", "sendgrid", "mailgun", "resend", "ses")


def _adapter_class(provider: str) -> type[Webhook] | None:
    """The class in ``digest.webhooks.<provider>`` whose ``name`` is ``provider``."""
    module_name = f"{__name__}.{provider}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
    for value in vars(module).values():
        if (
            inspect.isclass(value)
            and value.__module__ == module_name
            and getattr(value, "name", None) == provider
        ):
            return cast("type[Webhook]", value)
    raise ImportError(f"{module_name} defines no adapter class with name = {provider!r}")


def _registry() -> dict[str, type[Webhook]]:
    found = {p: _adapter_class(p) for p in PROVIDERS}
    return {p: cls for p, cls in found.items() if cls is not None}


WEBHOOKS: dict[str, type[Webhook]] = _registry()


__all__ = [
    "PROVIDERS",
    "WEBHOOKS",
    "DeliveryEvent",
    "EventType",
    "Verified",
    "Webhook",
    "WebhookRejected",
    "WebhookRequest",
]
