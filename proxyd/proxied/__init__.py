"""The proxied session: a logged-in client spliced onto its backend.

A login process (``proxyd.login``) runs the pre-login session and the login
at the backend; from then on the session is a ``ProxiedConnection``
(``connection.py``) pumping bytes both ways (``relay.py``).  In a
high-security login process it is handed off (``handoff.py``) to a relay
process (``relayhost.py``) instead, so the login process can exit.
``proxystate.py`` is the per-process state proxying shares: backend records,
source-IP rotation, disconnect pacing.
"""
