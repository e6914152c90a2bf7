"""The files of the test mail servers (no tests here): a self-signed certificate,
Dovecot's config and passwd-file, a private Postfix instance's main.cf and master.cf.
:mod:`tests.mailservers` starts the servers from them; see its docstring for why
each setting is there.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

BOUNCE_USER = "bounces@bounce.example"
GOOD_READER = "good@mail.example"
PASSWORD = "bounce-box-secret"
MAIL_UID = "mail"  # Debian's mail user owns the maildirs
START_SECONDS = 20.0
BOXES = 40  # bounce mailboxes for the tests, one each (MailServers.new_box)


def box_address(number: int) -> str:
    return f"box-{number}@bounce.example"


def run(argv: list[str]) -> None:
    """Run a command; its output goes to a file, not a pipe: the daemons it starts
    keep their inherited descriptors open, and a pipe would never reach EOF."""
    with tempfile.TemporaryFile() as out:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=START_SECONDS
        )
        if done.returncode != 0:
            out.seek(0)
            said = out.read().decode(errors="replace")
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {said}")


def certificate(root: Path) -> None:
    """A self-signed certificate for 127.0.0.1 and localhost (cert.pem, key.pem)."""
    run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"),
        ]
    )  # fmt: skip
    (root / "key.pem").chmod(0o600)


def dovecot_config(root: Path, imap: int, imaps: int, pop3s: int, lmtp: int) -> None:
    """dovecot.conf, the passwd-file and the maildir root under ``root``."""
    mail = root / "mail"
    mail.mkdir()
    shutil.chown(mail, MAIL_UID, MAIL_UID)
    addresses = [BOUNCE_USER, GOOD_READER, *(box_address(n) for n in range(BOXES))]
    users = "".join(user_line(root, u) for u in addresses)
    (root / "users").write_text(users, encoding="utf-8")
    (root / "dovecot.conf").write_text(
        f"""
base_dir = {root}/dovecot
state_dir = {root}/dovecot-state
log_path = {root}/dovecot.log
protocols = imap pop3 lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
recipient_delimiter = +
lmtp_save_to_detail_mailbox = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
""",
        encoding="utf-8",
    )


def user_line(root: Path, address: str) -> str:
    """A passwd-file line: the address, its password, Debian's mail user, its home."""
    return f"{address}:{{PLAIN}}{PASSWORD}:{MAIL_UID}:{MAIL_UID}::{root}/mail/{address}::\n"


def postfix_config(root: Path, smtp: int, lmtp_port: int) -> None:
    """A private Postfix instance's main.cf, master.cf and transport map."""
    config = root / "postfix"
    config.mkdir()
    (root / "queue").mkdir()  # postfix start creates what lies below it
    lmtp = f"lmtp:inet:127.0.0.1:{lmtp_port}"
    (config / "transport").write_text(f"mail.example {lmtp}\n")
    (config / "main.cf").write_text(
        f"""
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/postfix-data
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
syslog_name = postfix-digest-test
myhostname = mx.bounce.example
mydomain = bounce.example
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
relay_domains = mail.example
transport_maps = texthash:{config}/transport
virtual_mailbox_domains = bounce.example
virtual_transport = {lmtp}
smtpd_reject_unlisted_recipient = no
recipient_delimiter = +
biff = no
smtputf8_enable = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
""",
        encoding="utf-8",
    )
    services = [
        f"127.0.0.1:{smtp} inet n - n - - smtpd",
        "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify",
        "proxymap unix - - n - - proxymap",
        "smtp unix - - n - - smtp",
        "relay unix - - n - - smtp",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "discard unix - - n - - discard",
        "lmtp unix - - n - - lmtp",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    (config / "master.cf").write_text("\n".join(services) + "\n", encoding="utf-8")
