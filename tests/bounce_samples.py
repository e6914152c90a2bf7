"""Bounce-mailbox messages as real servers write them, for the bounce tests.

Each function takes the address the bounce is sent to (a VERP address, or the
plain bounce address) and the Message-ID of the message that bounced, and returns
the raw bytes (CRLF line ends, as they sit in a mailbox). Shapes copied from:
Postfix's ``bounce(8)`` (multipart/report, "This is the mail system at host",
``text/rfc822-headers``), Exim's plain-text "Mail delivery failed", Gmail's
"Delivery Status Notification (Failure)" and RFC 5965's ARF example.
"""

from __future__ import annotations

FROM = "Test Weekly <digest@test.example>"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _returned_headers(verp: str, message_id: str, recipient: str) -> str:
    return f"""Return-Path: <{verp}>
Received: from digest.test.example (digest.test.example [192.0.2.10])
\tby mail.test.example (Postfix) with ESMTPS id 4A1B2C3D4E
\tfor <{recipient}>; Mon, 23 Nov 2026 09:00:02 +0100 (CET)
From: {FROM}
To: {recipient}
Subject: Test Weekly: 4 new comparisons
Date: Mon, 23 Nov 2026 09:00:01 +0100
Message-ID: {message_id}
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="===============0123456789=="
List-Unsubscribe: <https://digest.test.example/u/1.abc>
List-Unsubscribe-Post: List-Unsubscribe=One-Click
"""


def postfix_dsn(
    verp: str,
    message_id: str,
    recipient: str,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "550 5.1.1 <{r}>: Recipient address rejected: User unknown in "
    "virtual mailbox table",
    queue_id: str = "4A1B2C3D4E",
    subject: str = "Undelivered Mail Returned to Sender",
) -> bytes:
    """A Postfix bounce (or, with ``action="delayed"``, a delay notice)."""
    words = diagnostic.format(r=recipient)
    boundary = f"{queue_id}.1795428003/mail.test.example"
    return _crlf(f"""Return-Path: <>
Delivered-To: {verp}
Received: by mail.test.example (Postfix)
\tid 5B6C7D8E9F; Mon, 23 Nov 2026 09:00:05 +0100 (CET)
Date: Mon, 23 Nov 2026 09:00:05 +0100 (CET)
From: MAILER-DAEMON@mail.test.example (Mail Delivery System)
Subject: {subject}
To: {verp}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Content-Transfer-Encoding: 7bit
Message-Id: <20261123080005.{queue_id}@mail.test.example>

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.test.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<{recipient}>: host mx.example.org[203.0.113.5] said: {words}
    (in reply to RCPT TO command)

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.test.example
X-Postfix-Queue-ID: {queue_id}
X-Postfix-Sender: rfc822; {verp}
Arrival-Date: Mon, 23 Nov 2026 09:00:02 +0100 (CET)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; {words}

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 7bit

{_returned_headers(verp, message_id, recipient)}
--{boundary}--
""")


def exim_text(verp: str, message_id: str, recipient: str) -> bytes:
    """Exim's plain-text bounce: no report part, the server's answer in the text."""
    return _crlf(f"""Return-path: <>
Envelope-to: {verp}
Delivery-date: Mon, 23 Nov 2026 09:00:09 +0100
Received: from mail by relay.test.example with local (Exim 4.97)
\tid 1tAbCd-000123-45
\tfor {verp}; Mon, 23 Nov 2026 09:00:09 +0100
X-Failed-Recipients: {recipient}
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@relay.test.example>
To: {verp}
Content-Type: text/plain; charset=us-ascii
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1tAbCd-000123-45@relay.test.example>
Date: Mon, 23 Nov 2026 09:00:09 +0100

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {recipient}
    host mx.example.org [203.0.113.7]
    SMTP error from remote mail server after RCPT TO:<{recipient}>:
    550 5.1.1 The email account that you tried to reach does not exist

------ This is a copy of the message, including all the headers. ------

{_returned_headers(verp, message_id, recipient)}
Your weekly digest, 550 words of it.
""")


def gmail_dsn(verp: str, message_id: str, recipient: str) -> bytes:
    """Gmail's bounce: text and HTML notices, the report, the whole message back."""
    boundary = "000000000000a1b2c3d4e5f6a7b8"
    return _crlf(f"""Delivered-To: {verp}
Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {verp}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
Message-ID: <5f3c2a1b.0a1b2c3d.4e5f.6789.GMR@mx.google.com>
Date: Mon, 23 Nov 2026 00:00:07 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="{boundary}"; report-type=delivery-status

--{boundary}
Content-Type: multipart/related; boundary="{boundary}-rel"

--{boundary}-rel
Content-Type: multipart/alternative; boundary="{boundary}-alt"

--{boundary}-alt
Content-Type: text/plain; charset="UTF-8"


** Address not found **

Your message wasn't delivered to {recipient} because the address couldn't be found,
or is unable to receive mail.

The response from the remote server was:
550 5.1.1 The email account that you tried to reach does not exist.

--{boundary}-alt
Content-Type: text/html; charset="UTF-8"

<html><body><h1>Address not found</h1><p>Your message wasn't delivered to
<a>{recipient}</a>.</p></body></html>

--{boundary}-alt--
--{boundary}-rel--
--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; digest.test.example
Arrival-Date: Mon, 23 Nov 2026 00:00:06 -0800 (PST)
X-Original-Message-ID: {message_id}

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (2607:f8b0:4864:20::a2b, the server
 for the domain gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.
 Please try double-checking the recipient's email address for typos or unnecessary
 spaces. https://support.google.com/mail/?p=NoSuchUser a1-20020a05 - gsmtp
Last-Attempt-Date: Mon, 23 Nov 2026 00:00:07 -0800 (PST)

--{boundary}
Content-Type: message/rfc822

{_returned_headers(verp, message_id, recipient)}
--===============0123456789==
Content-Type: text/plain; charset="utf-8"

This week: 4 new comparisons.
--===============0123456789==--

--{boundary}--
""")


def arf_complaint(
    to: str, message_id: str, recipient: str, *, feedback: str = "abuse", rcpt_header: bool = True
) -> bytes:
    """RFC 5965's example shape (§B.2) about our message; ``rcpt_header=False``: the
    ISP left Original-Rcpt-To out (the reader is then the returned message's To)."""
    boundary = "part1_13d.2e68ed54_boundary"
    rcpt = f"Original-Rcpt-To: <{recipient}>\n" if rcpt_header else ""
    return _crlf(f"""From: <abusedesk@example.org>
Date: Mon, 23 Nov 2026 17:40:36 -0400
Subject: FW: Test Weekly: 4 new comparisons
To: <{to}>
Message-ID: <arf-{recipient}-{feedback}@example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.10 on Mon, 23 Nov 2026 09:00:02 +0100.  For more information
about this format please see http://www.mipassoc.org/arf/.

--{boundary}
Content-Type: message/feedback-report

Feedback-Type: {feedback}
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <{to}>
{rcpt}Arrival-Date: Mon, 23 Nov 2026 09:00:02 +0100
Reporting-MTA: dns; mail.example.org
Source-IP: 192.0.2.10
Authentication-Results: mail.example.org;
               spf=pass smtp.mail={to}
Reported-Domain: test.example

--{boundary}
Content-Type: message/rfc822
Content-Disposition: inline

{_returned_headers(to, message_id, recipient)}
--===============0123456789==
Content-Type: text/plain; charset="utf-8"

This week: 4 new comparisons.
--===============0123456789==--

--{boundary}--
""")


def unclassifiable(to: str) -> bytes:
    """A reader's out-of-office reply: not a bounce, not a complaint."""
    return _crlf(f"""From: Ada Reader <ada@example.org>
To: {to}
Subject: Out of office: Test Weekly
Message-ID: <ooo-1@example.org>
Date: Mon, 23 Nov 2026 09:10:00 +0100
Auto-Submitted: auto-replied
Content-Type: text/plain; charset=utf-8

I am away until 30 November 2026, back in room 550 then.
""")
