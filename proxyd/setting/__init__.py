"""What a setting is and how Dovecot's value texts parse.

Below both :mod:`proxyd.config` (which collects every setting into its table)
and :mod:`proxyd.protocols` (whose plugins declare their own settings), so
that a protocol's settings live in its folder.
"""
