"""The naive sender: what a competent engineer writes in an afternoon.

Per subscriber: a Jinja render of the digest templates, an MJML compile and an
``email.message.EmailMessage``, sent with ``smtplib`` on one connection. No ledger,
no retries, no pooling: the reference the real sender is compared with.

    python -m benchmarks.naive_sender --config C --host H --port P [--limit N]

Reads the newest edition and the active subscribers from ``DIGEST_DATABASE_URL``
and prints one JSON line: ``{"sent": n, "seconds": s, "rate": n/s}``.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import mjml
from sqlalchemy import create_engine, select
from sqlmodel import Session

from digest import config
from digest.editions import lifecycle as editions
from digest.render.templates import TemplateSet
from digest.render.view import edition_view, site_view
from subscribers.models import Subscriber
from subscribers.tokens import Purpose, TokenSigner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--limit", type=int, default=1_000)
    args = parser.parse_args()
    cfg = config.load(args.config)
    engine = create_engine(os.environ["DIGEST_DATABASE_URL"])
    with Session(engine) as session:
        edition = editions.latest(session)
        assert edition is not None
        comparisons = editions.comparisons_of(session, edition=edition)
        readers = session.execute(
            select(Subscriber.id, Subscriber.email, Subscriber.name)  # type: ignore[call-overload]
            .where(Subscriber.status == "active")
            .order_by(Subscriber.id)
            .limit(args.limit)
        ).all()
    templates = TemplateSet(cfg.paths.templates)
    signer = TokenSigner([os.environ["DIGEST_SECRET_KEY"]])
    site = site_view(
        name=cfg.site.name, base_url=cfg.site.base_url, postal_address=cfg.site.postal_address
    )
    base = cfg.site.base_url.rstrip("/")
    started = time.perf_counter()
    with smtplib.SMTP(args.host, args.port) as smtp:
        for reader_id, email, name in readers:
            context = {
                "site": site,
                "edition": edition_view(site, edition.key, comparisons),
                "unsubscribe_url": f"{base}/u/{signer.sign(Purpose.unsubscribe, reader_id)}",
                "preferences_url": f"{base}/p/{signer.sign(Purpose.preferences, reader_id)}",
            }
            html = mjml.mjml2html(templates.render("digest.mjml.j2", context))
            msg = EmailMessage()
            msg["From"] = cfg.email.from_
            msg["To"] = f"{name} <{email}>"
            msg["Subject"] = templates.render("subject.txt.j2", context).strip()
            msg["Date"] = formatdate(localtime=False)
            msg["Message-ID"] = make_msgid(domain="verdicts.example.com")
            msg["List-Unsubscribe"] = f"<{context['unsubscribe_url']}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            msg.set_content(templates.render("digest.txt.j2", context))
            msg.add_alternative(html, subtype="html")
            smtp.send_message(msg)
    seconds = time.perf_counter() - started
    print(json.dumps({"sent": len(readers), "seconds": seconds, "rate": len(readers) / seconds}))


if __name__ == "__main__":
    main()
