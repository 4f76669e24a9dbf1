"""proxyd: a Trio IMAP/POP3 login proxy with Dovecot-compatible configuration."""

__version__ = "0.1.0"
