"""A tcpwrap-style access service: hosts.allow/hosts.deny rules for ``login_access_sockets``.

* ``proxyd.access.tables``: reading the two files into rules (pure);
* ``proxyd.access.match``: libwrap's ``hosts_access()`` over them (pure);
* ``proxyd.access.server``: the UNIX-socket service login processes ask.

The login side of the exchange is ``proxyd.login.access.check_access()``.
"""
