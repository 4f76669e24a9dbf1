"""``login_log_format_elements`` and ``login_log_format`` (Dovecot's client_get_log_str)."""

from __future__ import annotations

import pytest

from proxyd.errors import ConfigError
from proxyd.log import login_line
from proxyd.login.logformat import DEFAULT_ELEMENTS, LogElements, check_elements, variables

CLIENT = {
    "user": "alice@example.com",
    "username": "alice",
    "domain": "example.com",
    "service": "imap",
    "lip": "127.0.0.1",
    "rip": "192.0.2.7",
    "lport": "143",
    "rport": "50000",
    "mech": "PLAIN",
    "secured": "TLS",
    "mail_pid": "",
    "session": "abc",
    "real_rip": "10.0.0.1",
}


def test_default_elements() -> None:
    rendered = LogElements(DEFAULT_ELEMENTS).render(variables(CLIENT))
    assert rendered == (
        "user=<alice@example.com>, method=PLAIN, rip=192.0.2.7, lip=127.0.0.1, TLS, session=<abc>"
    )


def test_elements_with_only_empty_variables_are_left_out_but_the_user_stays() -> None:
    table = variables({"rip": "192.0.2.7"})
    assert LogElements(DEFAULT_ELEMENTS).render(table) == "user=<>, rip=192.0.2.7"
    assert LogElements("n=<%n> d=%d %{real_rip}").render(table) == "n=<>"


def test_long_names_aliases_and_modifiers() -> None:
    elements = LogElements("%{remote_ip}:%{rport} %Ln %{service} %{real_rip} static")
    # an element without a value of its own is left out, as in Dovecot (it equals its empty form)
    assert elements.render(variables(CLIENT)) == "192.0.2.7:50000, alice, imap, 10.0.0.1"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("%$: %s", "Login: user=<a>"),
        ("[%s] %$", "[user=<a>] Login"),
        ("%$ (100%%)", "Login (100%)"),
    ],
)
def test_login_line(template: str, expected: str) -> None:
    assert login_line(template, "Login", "user=<a>") == expected


def test_unknown_variable_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        check_elements("user=<%u> x=%{nosuch}", None)
    assert info.value.message.startswith("login_log_format_elements: ")
