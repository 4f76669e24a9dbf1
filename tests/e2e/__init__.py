"""End-to-end tests: a real proxyd process, real Dovecot backends, real clients."""
