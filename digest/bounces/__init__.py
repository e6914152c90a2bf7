"""Bounces and complaints that come back by mail, not by a provider's webhook.

An operator who sends through their own Postfix learns of most bounces only after
the SMTP session: the remote server reports to the envelope sender. With
``[email] bounce_address`` set, that sender names the delivery row (VERP,
:mod:`digest.delivery.verp`), and the reports land in one mailbox. This package
reads them and applies them through the same code as provider webhooks
(:func:`digest.delivery.events.apply`):

- :mod:`~digest.bounces.parse`: one message → a :class:`~digest.bounces.parse.Report`
  (RFC 3464 DSNs, RFC 5965 ARF complaints, common non-standard bounces), events
  in the webhook vocabulary (provider ``mailbox``);
- :mod:`~digest.bounces.ingest`: a report → stored and applied events
  (``digest bounces ingest``, a Postfix pipe);
- :mod:`~digest.bounces.mailbox`: the IMAP/POP3 poll (``digest bounces poll``).
"""
