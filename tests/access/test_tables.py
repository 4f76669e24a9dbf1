"""Reading hosts.allow/hosts.deny into rules (libwrap's table_match() and xgets())."""

from __future__ import annotations

import os

import pytest

from proxyd.access.tables import BUFLEN, Rule, Table, load_table, parse_table, split_at, tokens


def test_rules_lists_and_options():
    table = parse_table(
        b"# a comment\n"
        b"\n"
        b"   \t\n"
        b"imap, pop3 : 192.168.1. .example.com EXCEPT 192.168.1.5\n"
        b"ALL EXCEPT imap:ALL: spawn echo hi\\: there : deny\n",
        "hosts.allow",
    )
    assert table == Table(
        "hosts.allow",
        (
            Rule(
                4, ("imap", "pop3"), ("192.168.1.", ".example.com", "EXCEPT", "192.168.1.5"), None
            ),
            Rule(5, ("ALL", "EXCEPT", "imap"), ("ALL",), " spawn echo hi\\: there : deny\n"),
        ),
    )


def test_backslash_newline_joins_lines_without_a_space():
    table = parse_table(b"imap: 10.0.0.1,\\\n 10.0.0.2\\\n\\\n,10.0.0.3\n")
    assert table.rules == (Rule(4, ("imap",), ("10.0.0.1", "10.0.0.2", "10.0.0.3"), None),)
    glued = parse_table(b"imap: 10.0.0.1\\\nEXCEPT\n")
    assert glued.rules[0].clients == ("10.0.0.1EXCEPT",)


def test_hash_only_comments_at_line_start():
    table = parse_table(b"#imap: ALL\n  # not a comment: ALL\nimap: 10.0.0.1 # trailing\n")
    assert [r.daemons for r in table.rules] == [("#", "not", "a", "comment"), ("imap",)]
    assert table.rules[1].clients == ("10.0.0.1", "#", "trailing")


def test_missing_colon_is_skipped_with_a_warning():
    table = parse_table(b"imap 10.0.0.1\nimap: ALL\n", "f")
    assert table.rules == (Rule(2, ("imap",), ("ALL",), None),)
    assert table.warnings == ('f, line 1: missing ":" separator',)
    assert table.error is None


def test_brackets_protect_colons():
    table = parse_table(b"imap: [::1] [2001:db8::]/32 : allow\n")
    assert table.rules[0].clients == ("[::1]", "[2001:db8::]/32")
    assert table.rules[0].options == " allow\n"
    assert split_at("a[:]b:c", ":") == ("a[:]b", "c")
    assert split_at("]x:y", ":") is None  # an unbalanced ']' leaves the depth below zero
    assert split_at("abc", ":") is None


def test_tokens_split_on_commas_and_whitespace_only():
    assert tokens(" a,b\tc\r\nd ,, e\x0bf ") == ("a", "b", "c", "d", "e\x0bf")
    assert tokens("") == ()


def test_last_line_without_newline_ends_the_table_in_error():
    table = parse_table(b"imap: 10.0.0.1\nimap: 10.0.0.2", "f")
    assert table.rules == (Rule(1, ("imap",), ("10.0.0.1",), None),)
    assert table.error == "f, line 1: missing newline or line too long"


def test_continuation_at_end_of_file_is_a_missing_newline():
    assert parse_table(b"imap: ALL \\\n").error is not None


@pytest.mark.parametrize("length", [BUFLEN - 1, BUFLEN, BUFLEN + 50])
def test_long_lines_stop_the_table(length):
    line = b"imap: " + b"x" * (length - len(b"imap: ") - 1) + b"\n"
    assert len(line) == length
    table = parse_table(line + b"imap: ALL\n")
    if length <= BUFLEN - 1:
        assert table.error is None
        assert len(table.rules) == 2
    else:
        assert table.error is not None
        assert table.rules == ()


def test_nul_byte_cuts_its_physical_line():
    # the rest of the line after the NUL (newline included) is lost, so the next
    # physical line continues the same logical line
    table = parse_table(b"imap: 10.0.0.1\0junk\nimap: ALL\n")
    # (libwrap counts only newlines it sees, so this is "line 1")
    assert table.rules == (Rule(1, ("imap",), ("10.0.0.1imap",), " ALL\n"),)


def test_every_byte_survives_as_latin1():
    table = parse_table(b"imap: caf\xe9.example\n")
    assert table.rules[0].clients == ("caf\xe9.example",)


def test_load_table(tmp_path):
    path = tmp_path / "hosts.allow"
    assert load_table(str(path)) == Table(str(path))  # missing file: empty, no error
    path.write_bytes(b"imap: ALL\n")
    assert load_table(str(path)).rules == (Rule(1, ("imap",), ("ALL",), None),)
    if os.geteuid() != 0:  # root reads anything
        path.chmod(0)
        assert load_table(str(path)).error is not None
    directory = tmp_path / "dir"
    directory.mkdir()
    unreadable = load_table(str(directory))
    assert unreadable.error is not None
    assert unreadable.error.startswith(f"cannot open {directory}")
