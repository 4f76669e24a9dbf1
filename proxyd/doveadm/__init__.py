"""Dovecot's doveadm HTTP API (``/doveadm/v1``) as proxyd serves it from its master."""
