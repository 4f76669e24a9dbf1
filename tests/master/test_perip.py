"""proxyd_prelogin_per_ip_limit's bookkeeping in the master (sans-IO)."""

from __future__ import annotations

from proxyd.master.perip import LimitChange, PreloginPerIp

A = "192.0.2.7"
B = "192.0.2.8"


def test_an_address_is_over_the_limit_at_the_limit_and_below_it_again() -> None:
    perip = PreloginPerIp(limit=2)
    assert perip.report(10, "imap-login", A, 1) == []
    assert perip.report(11, "imap-login", A, 1) == [LimitChange("imap-login", A, over=True, log=True)]
    assert perip.over_limit("imap-login") == {A}
    assert perip.report(10, "imap-login", B, 1) == []  # other addresses are not affected
    assert perip.report(10, "imap-login", A, -1) == [LimitChange("imap-login", A, over=False)]
    assert perip.over_limit("imap-login") == set()
    assert perip.limit_reached["imap-login"] == 1


def test_services_count_apart() -> None:
    perip = PreloginPerIp(limit=1)
    assert perip.report(10, "imap-login", A, 1) == [LimitChange("imap-login", A, over=True, log=True)]
    assert perip.report(20, "pop3-login", A, 1)[0].service == "pop3-login"
    assert perip.over_limit("imap-login") == {A} == perip.over_limit("pop3-login")


def test_a_dead_login_process_takes_its_connections_with_it() -> None:
    perip = PreloginPerIp(limit=2)
    perip.report(10, "imap-login", A, 1)
    perip.report(10, "imap-login", A, 1)
    assert perip.over_limit("imap-login") == {A}
    assert perip.child_gone(10) == [LimitChange("imap-login", A, over=False)]
    assert perip.counts["imap-login"] == {}
    assert perip.child_gone(10) == []


def test_the_warning_is_logged_at_most_once_a_minute_per_address() -> None:
    perip = PreloginPerIp(limit=1)
    assert perip.report(10, "imap-login", A, 1)[0].log
    perip.report(10, "imap-login", A, -1)
    again = perip.report(10, "imap-login", A, 1)
    assert again == [LimitChange("imap-login", A, over=True, log=False)]
    assert perip.limit_reached["imap-login"] == 2


def test_a_reload_applies_the_new_limit_to_the_connections_there_are() -> None:
    perip = PreloginPerIp(limit=3)
    for _ in range(2):
        perip.report(10, "imap-login", A, 1)
    assert perip.relimit(2) == [LimitChange("imap-login", A, over=True, log=True)]
    assert perip.relimit(0) == [LimitChange("imap-login", A, over=False)]
    assert perip.report(10, "imap-login", A, 1) == []  # off: nobody is over


def test_counts_never_go_below_zero() -> None:
    perip = PreloginPerIp(limit=1)
    assert perip.report(10, "imap-login", A, -1) == []
    assert perip.counts["imap-login"] == {}
    assert perip.report(10, "imap-login", A, 1)[0].over
