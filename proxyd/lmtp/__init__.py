"""The LMTP proxy service (Dovecot's ``lmtp`` with ``lmtp_proxy = yes``): Trio drivers.

The protocol engines are in ``proxyd.protocols.lmtp``; here are the process
(``worker``), one MTA connection (``session``) and one backend connection
(``backend``).
"""

from __future__ import annotations

import logging
import os


def process_log() -> logging.Logger:
    """Dovecot's ``lmtp(PID)`` log prefix, of the process that logs (not of the one that
    imported this module before it forked the lmtp processes)."""
    return logging.getLogger(f"lmtp({os.getpid()})")
