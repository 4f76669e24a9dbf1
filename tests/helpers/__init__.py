"""Test helpers: clients, a recording IMAP backend."""
