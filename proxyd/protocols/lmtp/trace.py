"""The ``Received:`` header Dovecot's LMTP adds to a proxied message (``lmtp_add_received_header``).

Dovecot's ``smtp_server_transaction_write_trace_record()``::

    Received: from <LHLO domain or "unknown"> ([<MTA ip>])
    \t(using <TLS protocol and cipher>)            only over TLS
    \tby <hostname> with LMTP[S]
    \tid <transaction id>
    \t(envelope-from <sender>)
    \tfor <recipient>; <RFC 5322 date>           "for" only with one recipient
"""

from __future__ import annotations

from email.utils import formatdate

from proxyd.protocols.lmtp.address import Address


def received_header(
    *,
    helo: str,
    remote_ip: str,
    tls: str | None,
    hostname: str,
    transaction_id: str,
    sender: Address,
    recipients: list[Address],
    timestamp: float,
) -> bytes:
    """The header, CRLF-terminated; ``tls`` is e.g. ``TLSv1.3 with cipher X (256/256 bits)``."""
    parts = [f"Received: from {helo or 'unknown'}"]
    if remote_ip:
        parts.append(f" ([{remote_ip}])")
    if tls is not None:
        parts.append(f"\r\n\t(using {tls})")
    parts.append(f"\r\n\tby {hostname} with LMTP{'S' if tls is not None else ''}")
    parts.append(f"\r\n\tid {transaction_id}")
    parts.append(f"\r\n\t(envelope-from <{sender.encode()}>)")
    if len(recipients) == 1:
        parts.append(f"\r\n\tfor <{recipients[0].encode()}>")
    parts.append(f"; {formatdate(timestamp, localtime=True)}\r\n")
    return "".join(parts).encode("utf-8")
