"""The LMTP proxy service (Dovecot's ``lmtp`` with ``lmtp_proxy = yes``): Trio drivers.

The protocol engines are in ``proxyd.protocols.lmtp``; here are the process
(``worker``), one MTA connection (``session``) and one backend connection
(``backend``).
"""
