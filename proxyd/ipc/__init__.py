"""What crosses between proxyd's processes, below every process that uses it.

The processes (README, "Processes"): the master supervises; the zygote forks
its children; login processes run the pre-login sessions (``proxyd.login``);
relay processes hold the sessions handed off by high-security login
processes; the auth process owns the passdbs (``proxyd.auth``); the tcpwrap
process answers ``login_access_sockets``.

* ``messages.py``: every message between the master and its children as a
  frozen record, with its encoding; ``admin.py``: those between ``proxyctl``
  and the master;
* ``channel.py``: the newline-delimited JSON framing and the trio channel that
  carries the records;
* the login<->auth socket's records are ``proxyd.auth.protocol``; the
  hand-off record (login -> relay) is ``proxyd.proxied.handoff.HandoffRecord``;
  the zygote's requests and reports are ``zygote.py``.
"""
