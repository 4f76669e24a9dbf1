"""The table of every setting proxyd knows, and what it does with each.

A name in a configuration file falls into exactly one of these groups:

1. **Implemented** (:data:`TOP`, :data:`INET_LISTENER`, :data:`PASSDB`):
   parsed with the spec's ``parse`` function into a :class:`Settings` field.
2. **Roadmap** (:data:`ROADMAP_TOP`, :data:`ROADMAP_SERVICE`, ...): named in
   the interface contract, to be implemented later.  Using one is an error
   ``setting 'X' is not supported yet``, never silently ignored.
3. **Honoured by Dovecot's login, auth or master processes**
   (:data:`HONOURED_TOP`) but not implemented yet: the same error.
4. **Unused by a proxy** (:data:`UNUSED_TOP`, :data:`UNUSED_SECTIONS`, services
   proxyd does not run, ``protocol`` blocks of protocols it does not serve,
   ``userdb``): settings of mail storage, delivery and the other processes of
   a Dovecot server.  They are accepted so that a Dovecot tree loads as it is,
   kept in ``Settings.unused`` with ``FILE:LINE``, listed by ``proxyd -n``
   under one heading, and never applied.  A ``userdb { }`` is still checked
   for typos (:data:`USERDB_KEYS`).
5. Anything else: ``Unknown setting: X``.

Settings in ``protocol``/``local``/``remote`` blocks: those in
:data:`FILTER_LOGIN` and :data:`FILTER_AUTH` are applied per connection
(:mod:`proxyd.config.filters`); unused ones are listed as above; any other
implemented setting there is an error (proxyd reads it once per process).

Defaults are Dovecot 2.3's, except ``protocols`` (``imap``: Dovecot's default
``imap pop3 lmtp`` would open the POP3 ports of a configuration that never
asked for them; ``protocols = imap pop3`` enables POP3) and ``base_dir``
(proxyd's own directory).
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final

from proxyd import openssl_ctx
from proxyd.config import hosts
from proxyd.log import SYSLOG_FACILITIES, check_login_format
from proxyd.protocols import registry
from proxyd.setting import values as v
from proxyd.setting.spec import Scope as Scope
from proxyd.setting.spec import SettingSpec as SettingSpec
from proxyd.setting.spec import setting

# --- value parsers that carry proxyd's "not yet" rules ---------------------

#: the names ``protocols`` serves (the registry's)
IMPLEMENTED_PROTOCOLS: Final = frozenset(registry.BY_NAME)
#: Dovecot's other protocols: accepted while the value is built, refused in check_protocols
_LATER_PROTOCOLS: Final = registry.NOT_YET

IMPLEMENTED_MECHANISMS: Final = frozenset(
    {
        "plain", "login", "xoauth2", "oauthbearer", "cram-md5", "digest-md5", "scram-sha-1",
        "scram-sha-256", "apop", "external", "anonymous",
    }
)
#: SASL mechanisms Dovecot 2.3's auth process knows
_DOVECOT_MECHANISMS: Final = frozenset(
    {
        "anonymous", "apop", "cram-md5", "digest-md5", "external", "gss-spnego", "gssapi",
        "ntlm", "oauthbearer", "otp", "rpa", "scram-sha-1", "scram-sha-256", "skey",
        "winbind", "xoauth2",
    }
)  # fmt: skip


def parse_protocols(value: str) -> tuple[str, ...]:
    """``protocols``: space separated; ``none`` alone means no protocol at all."""
    names = value.split()
    if names == ["none"]:
        return ()
    result: list[str] = []
    for name in names:
        # protocols still to come are refused only in the final value (check_protocols):
        # Debian's protocols.d files add them one "$protocols NAME" at a time
        if name not in IMPLEMENTED_PROTOCOLS and name not in _LATER_PROTOCOLS:
            raise v.InvalidValue(f"protocols: Unknown protocol: {name}")
        if name not in result:  # Debian's "protocols = $protocols imap" can repeat one
            result.append(name)
    return tuple(result)


def check_protocols(protocols: tuple[str, ...]) -> None:
    """The final ``protocols`` value names only protocols proxyd serves."""
    for name in protocols:
        if name not in IMPLEMENTED_PROTOCOLS:
            raise v.InvalidValue(f"protocol '{name}' is not supported yet")


def format_protocols(protocols: tuple[str, ...]) -> str:
    return " ".join(protocols) if protocols else "none"


def parse_listen(value: str) -> tuple[str, ...]:
    addresses = v.parse_addresses(value)
    if not addresses:
        raise v.InvalidValue("listen can't be set empty")
    return addresses


def parse_base_dir(value: str) -> str:
    # Dovecot drops one trailing slash (master_settings_verify)
    return value[:-1] if len(value) > 1 and value.endswith("/") else value


def parse_mechanisms(value: str) -> tuple[str, ...]:
    """``auth_mechanisms``: space separated, any case; stored in lower case."""
    names = [name.lower() for name in value.split()]
    if not names:
        raise v.InvalidValue("No authentication mechanisms configured")
    for name in names:
        if name in IMPLEMENTED_MECHANISMS:
            continue
        if name in _DOVECOT_MECHANISMS:
            raise v.InvalidValue(f"auth_mechanisms: mechanism '{name}' is not supported yet")
        if name not in IMPLEMENTED_MECHANISMS:
            raise v.InvalidValue(f"Unknown authentication mechanism '{name}'")
    return tuple(dict.fromkeys(names))


def parse_realms(value: str) -> tuple[str, ...]:
    """``auth_realms``: space separated; each goes into DIGEST-MD5's challenge as ``realm="..."``."""
    realms = tuple(value.split())
    for realm in realms:
        if any(char in realm for char in '"\\') or not realm.isprintable():
            # Dovecot copies the realm into the quoted string as it is; one of these would break it
            raise v.InvalidValue(f"auth_realms: invalid realm '{realm}'")
    return realms


_SSL_PROTOCOLS: Final = ("ANY", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", "LATEST")


def parse_ssl_min_protocol(value: str) -> str:
    """Case-insensitive like Dovecot; returned in its canonical spelling."""
    for name in _SSL_PROTOCOLS:
        if name.lower() == value.lower():
            return name
    raise v.InvalidValue(f"Unknown ssl_min_protocol setting '{value}'")


#: Dovecot 2.3's default ``ssl_cipher_list``
DOVECOT_CIPHER_LIST: Final = (
    "ALL:!kRSA:!SRP:!kDHd:!DSS:!aNULL:!eNULL:!EXPORT:!DES:!3DES:!MD5:!PSK:!RC4:!ADH:!LOW@STRENGTH"
)


def _check_tls(value: str, setter: Callable[[ssl.SSLContext, str], None], error: str) -> str:
    """Checked against the linked OpenSSL now, so that a bad list is a FILE:LINE error."""
    if value:
        try:
            setter(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), value)
        except ssl.SSLError:
            raise v.InvalidValue(error.format(value=value)) from None
    return value


def parse_cipher_list(value: str) -> str:
    return _check_tls(
        value, ssl.SSLContext.set_ciphers, "Can't set cipher list to '{value}': No cipher matches"
    )


def parse_cipher_suites(value: str) -> str:
    return _check_tls(
        value, openssl_ctx.set_ciphersuites, "Can't set cipher suites to '{value}': No cipher matches"
    )


def parse_curve_list(value: str) -> str:
    return _check_tls(value, openssl_ctx.set_groups, "Failed to set curve list to '{value}'")


def parse_ssl_options(value: str) -> tuple[str, ...]:
    """``ssl_options``: ``compression``, ``no_compression`` (the default), ``no_ticket``."""
    options: list[str] = []
    for option in value.replace(",", " ").split():
        lowered = option.lower()
        if lowered not in ("compression", "no_compression", "no_ticket"):
            raise v.InvalidValue(f"ssl_options: unknown flag: '{option}'")
        if lowered not in options:
            options.append(lowered)
    return tuple(options)


def parse_login_log_format(value: str) -> str:
    try:
        return check_login_format(value)
    except ValueError as exc:
        raise v.InvalidValue(str(exc)) from None


def _only_no(name: str, value: str) -> bool:
    """A boolean Dovecot has but proxyd implements only in its default ``no``."""
    if v.parse_bool(value):
        raise v.InvalidValue(f"setting '{name} = yes' is not supported yet")
    return False


def _same(value: str) -> str:
    return value


def _existing_file(name: str, value: str) -> str:
    if value and not os.path.isfile(value):
        raise v.InvalidValue(f"{name}: {value}: No such file")
    return value


def _existing_dir(name: str, value: str) -> str:
    if value and not os.path.isdir(value):
        raise v.InvalidValue(f"{name}: {value}: No such directory")
    return value


def _parse_str(value: str) -> str:
    return value


_spec = setting


def _str(name: str, scope: Scope, default: str = "", **extra: Any) -> SettingSpec:
    return _spec(name, scope, _parse_str, _same, default, **extra)


def _bool(name: str, scope: Scope, default: str) -> SettingSpec:
    return _spec(name, scope, v.parse_bool, v.format_bool, default)


_RESULT_ACTIONS: Final = (
    "return-ok",
    "return",
    "return-fail",
    "continue",
    "continue-ok",
    "continue-fail",
)
_FAIL_ACTIONS: Final = (
    "continue",
    "return",
    "return-ok",
    "return-fail",
    "continue-ok",
    "continue-fail",
)

_T = Scope.TOP
_TOP_SPECS: Final = (
    _spec("protocols", _T, parse_protocols, format_protocols, "imap"),
    _spec("listen", _T, parse_listen, v.format_addresses, "*, ::"),
    _spec("base_dir", _T, parse_base_dir, _same, "/var/run/proxyd"),
    _str("log_path", _T),
    _bool("shutdown_clients", _T, "yes"),
    _str("import_environment", _T, "TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID LISTEN_FDS NOTIFY_SOCKET"),
    _str("info_log_path", _T),
    _str("debug_log_path", _T),
    _str("log_timestamp", _T, "%b %d %H:%M:%S "),
    _spec(
        "syslog_facility",
        _T,
        partial(v.parse_enum, allowed=tuple(SYSLOG_FACILITIES)),
        _same,
        "mail",
    ),
    _bool("auth_verbose", _T, "no"),
    _bool("auth_debug", _T, "no"),
    _spec("ssl", _T, partial(v.parse_enum, allowed=("yes", "no", "required")), _same, "yes"),
    _str("ssl_cert", _T, pem=True),
    _str("ssl_key", _T, pem=True, secret=True),
    _str("ssl_ca", _T, pem=True),
    _spec("ssl_min_protocol", _T, parse_ssl_min_protocol, _same, "TLSv1.2"),
    # client certificates (verified against ssl_ca) and SASL EXTERNAL
    _bool("ssl_verify_client_cert", _T, "no"),
    _str("ssl_cert_username_field", _T, "commonName"),
    _bool("auth_ssl_require_client_cert", _T, "no"),
    _bool("auth_ssl_username_from_cert", _T, "no"),
    _str("ssl_dh", _T, pem=True),
    _str("ssl_alt_cert", _T, pem=True),
    _str("ssl_alt_key", _T, pem=True, secret=True),
    _str("ssl_key_password", _T, secret=True),
    _spec("ssl_cipher_list", _T, parse_cipher_list, _same, DOVECOT_CIPHER_LIST),
    _spec("ssl_cipher_suites", _T, parse_cipher_suites, _same, ""),
    _spec("ssl_curve_list", _T, parse_curve_list, _same, ""),
    _bool("ssl_prefer_server_ciphers", _T, "no"),
    _spec("ssl_options", _T, parse_ssl_options, " ".join, ""),
    _bool("verbose_ssl", _T, "no"),
    _bool("disable_plaintext_auth", _T, "yes"),
    _spec("auth_mechanisms", _T, parse_mechanisms, " ".join, "plain"),
    _str(
        "auth_username_chars",
        _T,
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@",
    ),
    _str("auth_username_translation", _T),
    _str("auth_username_format", _T, "%Lu"),
    _str("auth_default_realm", _T),
    _spec("auth_realms", _T, parse_realms, " ".join, ""),
    _spec("auth_worker_max_count", _T, v.parse_uint, str, "30"),
    _spec("auth_failure_delay", _T, v.parse_time, v.format_time, "2 secs"),
    _spec("auth_cache_size", _T, v.parse_size, v.format_size, "0"),
    _spec("auth_cache_ttl", _T, v.parse_time, v.format_time, "1 hours"),
    _spec("auth_cache_negative_ttl", _T, v.parse_time, v.format_time, "1 hours"),
    _str("login_greeting", _T, "Dovecot ready."),
    _str(
        "login_log_format_elements",
        _T,
        "user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}>",
    ),
    _spec("login_log_format", _T, parse_login_log_format, _same, "%$: %s"),
    # the name in SMTP-style greetings and LHLO replies ("" = the system's host name)
    _str("hostname", _T),
    _str("recipient_delimiter", _T, "+"),
    # where the lmtp process keeps a message larger than 128 KiB while it delivers it
    _spec("mail_temp_dir", _T, partial(v.parse_plain_path, "mail_temp_dir"), _same, "/tmp"),  # noqa: S108 - Dovecot's default
    _spec("login_trusted_networks", _T, v.parse_networks, v.format_networks, ""),
    _spec(
        "login_proxy_timeout",
        _T,
        partial(v.parse_time, milliseconds=True),
        partial(v.format_time, milliseconds=True),
        "30 secs",
    ),
    _spec("login_proxy_max_reconnects", _T, v.parse_uint, str, "3"),
    _spec("login_proxy_max_disconnect_delay", _T, v.parse_time, v.format_time, "0"),
    _spec("login_source_ips", _T, hosts.parse_source_ips, hosts.format_host_list, ""),
    _spec("auth_proxy_self", _T, hosts.parse_proxy_self, hosts.format_host_list, ""),
    _str("auth_master_user_separator", _T),
    _str("auth_anonymous_username", _T, "anonymous"),
    _spec(
        "proxyd_local_backend", _T, hosts.parse_local_backend, hosts.format_local_backend, ""
    ),
    _bool("proxyd_plaintext_handoff", _T, "yes"),
    _spec("proxyd_prelogin_per_ip_limit", _T, v.parse_uint, str, "0"),
    _str("ssl_client_cert", _T, pem=True),
    _str("ssl_client_key", _T, pem=True, secret=True),
    _spec(
        "ssl_client_ca_file", _T, partial(_existing_file, "ssl_client_ca_file"), _same, ""
    ),
    _spec("ssl_client_ca_dir", _T, partial(_existing_dir, "ssl_client_ca_dir"), _same, ""),
    _bool("ssl_require_crl", _T, "yes"),
    _str("default_login_user", _T, "dovenull"),
    _str("default_internal_user", _T, "dovecot"),
    _spec("default_process_limit", _T, v.parse_uint, str, "100"),
    _spec("default_client_limit", _T, v.parse_uint, str, "1000"),
    _spec("default_vsz_limit", _T, v.parse_size, v.format_size, "256 M"),
    _spec("default_idle_kill", _T, v.parse_time, v.format_time, "1 mins"),
    _spec("haproxy_trusted_networks", _T, v.parse_networks, v.format_networks, ""),
    _spec("haproxy_timeout", _T, v.parse_time, v.format_time, "3 secs"),
    _spec("login_access_sockets", _T, lambda text: tuple(text.split()), " ".join, ""),
    # the doveadm HTTP API (service doveadm { inet_listener http { } })
    _str("doveadm_api_key", _T, secret=True),
    _str("doveadm_password", _T, secret=True),
    # proxyd's: the doveadm HTTP listeners of this node's peers (proxyctl --cluster, move)
    _spec("proxyd_cluster_peers", _T, hosts.parse_cluster_peers, " ".join, ""),
)

_L = Scope.INET_LISTENER
_LISTENER_SPECS: Final = (
    _spec("address", _L, v.parse_addresses, v.format_addresses, "", field="addresses"),
    _spec("port", _L, v.parse_port, str, "0"),
    _bool("ssl", _L, "no"),
    _bool("haproxy", _L, "no"),
    _spec("reuse_port", _L, partial(_only_no, "reuse_port"), v.format_bool, "no"),
)

_P = Scope.PASSDB
_PASSDB_SPECS: Final = (
    _str("name", _P),
    _str("driver", _P),
    _str("args", _P),
    _str("default_fields", _P),
    _str("override_fields", _P),
    _spec(
        "skip",
        _P,
        partial(v.parse_enum, allowed=("never", "authenticated", "unauthenticated")),
        _same,
        "never",
    ),
    _spec("result_success", _P, partial(v.parse_enum, allowed=_RESULT_ACTIONS), _same, "return-ok"),
    _spec("result_failure", _P, partial(v.parse_enum, allowed=_FAIL_ACTIONS), _same, "continue"),
    _spec(
        "result_internalfail", _P, partial(v.parse_enum, allowed=_FAIL_ACTIONS), _same, "continue"
    ),
    _bool("master", _P, "no"),
    _spec("pass", _P, v.parse_bool, v.format_bool, "no", field="pass_"),
    # Dovecot passdb booleans proxyd implements only as "no"
    _spec("deny", _P, partial(_only_no, "deny"), v.format_bool, "no"),
)

#: each protocol's own settings (``managesieve_*``, ``lmtp_*``...), from its plugin
PROTOCOL_SPECS: Final = tuple(
    dataclasses.replace(spec, protocol=p.name) for p in registry.PROTOCOLS for spec in p.settings.specs
)
TOP: Final[Mapping[str, SettingSpec]] = {spec.name: spec for spec in (*_TOP_SPECS, *PROTOCOL_SPECS)}
INET_LISTENER: Final[Mapping[str, SettingSpec]] = {spec.name: spec for spec in _LISTENER_SPECS}
PASSDB: Final[Mapping[str, SettingSpec]] = {spec.name: spec for spec in _PASSDB_SPECS}
_S = Scope.SERVICE
_SERVICE_SPECS: Final = (
    _spec("service_count", _S, v.parse_uint, str, "1"),
    _spec("client_limit", _S, v.parse_uint, str, "0"),
    _spec("process_limit", _S, v.parse_uint, str, "0"),
    _spec("process_min_avail", _S, v.parse_uint, str, "0"),
    _spec("vsz_limit", _S, v.parse_size, v.format_size, "$default_vsz_limit"),
    _spec("idle_kill", _S, v.parse_time, v.format_time, "$default_idle_kill"),
    _str("user", _S, "$default_login_user"),
    _str("group", _S, ""),
    _str("chroot", _S, "login"),
)
#: implemented service-level settings (listeners are sections)
SERVICE: Final[Mapping[str, SettingSpec]] = {spec.name: spec for spec in _SERVICE_SPECS}

def parse_mode(value: str) -> int:
    """A file mode in octal (Dovecot's ``SET_UINT_OCT``): ``0600``, ``666``."""
    if not value or any(char not in "01234567" for char in value) or int(value, 8) > 0o7777:
        raise v.InvalidValue(f"Invalid number {value}: Not a valid octal number")
    return int(value, 8)


_U = Scope.UNIX_LISTENER
#: keys of ``unix_listener NAME { }`` in the services proxyd runs
UNIX_LISTENER: Final[Mapping[str, SettingSpec]] = {
    spec.name: spec
    for spec in (
        _str("path", _U),
        _spec("mode", _U, parse_mode, lambda mode: f"0{mode:o}", "0666"),
        _str("user", _U),
        _str("group", _U),
    )
}
#: the one socket each service proxyd runs creates (Dovecot's names, under base_dir)
OWN_UNIX_LISTENERS: Final[Mapping[str, str]] = {"auth": "login/login", "tcpwrap": "login/tcpwrap"}
#: services whose client-facing sockets are whatever the configuration names (``unix_listener
#: PATH``): those of the protocols that are not login services (LMTP's MTA sockets)
FREE_UNIX_LISTENERS: Final = frozenset(p.service for p in registry.PROTOCOLS if p.login is None)

#: services with an implementation
IMPLEMENTED_SERVICES: Final = frozenset(
    {p.service for p in registry.PROTOCOLS} | {"tcpwrap", "doveadm", "stats"}
)
#: services the master serves itself: only their ``inet_listener http`` applies
MASTER_HTTP_SERVICES: Final = frozenset({"doveadm", "stats"})

# --- roadmap: in the interface contract, not implemented yet -----------------

#: name -> Dovecot's default in doveconf form (``$name`` expands to it)
ROADMAP_TOP: Final[Mapping[str, str]] = {
    "mail_max_userip_connections": "10",
}
#: service settings still to come (none now: the process model implements them all)
ROADMAP_SERVICE: Final[frozenset[str]] = frozenset()


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- other Dovecot 2.3 names (doveconf -a, Dovecot 2.3.19) --------------------

#: Dovecot defaults of other settings that configurations commonly use as ``$name``
_OTHER_DEFAULTS: Final[Mapping[str, str]] = {
    "default_internal_group": "dovecot",
    "instance_name": "dovecot",
    "state_dir": "/var/lib/dovecot",
}

_PROTOCOL_NOT_YET: Final = frozenset().union(*(p.settings.not_yet for p in registry.PROTOCOLS))
_PROTOCOL_UNUSED: Final = frozenset().union(*(p.settings.unused for p in registry.PROTOCOLS))

#: the Dovecot names below and the protocols' own (their plugins name them)
DOVECOT_TOP: Final = _PROTOCOL_NOT_YET | _PROTOCOL_UNUSED | _names(
    """
    auth_cache_verify_password_with_worker auth_debug_passwords
    auth_gssapi_hostname auth_krb5_keytab auth_policy_check_after_auth
    auth_policy_check_before_auth auth_policy_hash_mech auth_policy_hash_nonce
    auth_policy_hash_truncate auth_policy_log_only auth_policy_reject_on_fail
    auth_policy_report_after_auth auth_policy_request_attributes auth_policy_server_api_header
    auth_policy_server_timeout_msecs auth_policy_server_url auth_socket_path
    auth_stats auth_use_winbind
    auth_verbose_passwords
    auth_winbind_helper_path config_cache_size
    default_internal_group deliver_log_format dict_db_config
    director_flush_socket director_mail_servers director_max_parallel_kicks
    director_max_parallel_moves director_output_buffer_size director_ping_idle_timeout
    director_ping_max_timeout director_servers director_user_expire director_user_kick_delay
    director_username_hash dotlock_use_excl doveadm_allowed_commands
    doveadm_http_rawlog_dir doveadm_port doveadm_socket_path doveadm_ssl
    doveadm_username doveadm_worker_count dsync_alt_char dsync_commit_msgs_interval
    dsync_features dsync_hashed_headers dsync_remote_cmd
    imap_urlauth_host imap_urlauth_logout_format imap_urlauth_port
    imapc_cmd_timeout imapc_connection_retry_count imapc_connection_retry_interval
    imapc_features imapc_host imapc_list_prefix imapc_master_user imapc_max_idle_time
    imapc_max_line_length imapc_password imapc_port imapc_rawlog_dir imapc_sasl_mechanisms
    imapc_ssl imapc_ssl_verify imapc_user instance_name
    lda_mailbox_autocreate lda_mailbox_autosubscribe lda_original_recipient_header libexec_dir
    lock_method log_core_filter log_debug
    login_plugin_dir login_plugins
    login_proxy_notify_path login_proxy_rawlog_dir mail_access_groups mail_always_cache_fields
    mail_attachment_detection_options mail_attachment_dir mail_attachment_fs
    mail_attachment_hash mail_attachment_min_size mail_attribute_dict mail_cache_fields
    mail_chroot mail_debug mail_fsync mail_full_filesystem_access mail_home mail_log_prefix
    mail_max_keyword_length mail_max_lock_timeout mail_never_cache_fields mail_nfs_index
    mail_nfs_storage mail_plugin_dir mail_plugins mail_prefetch_count mail_save_crlf
    mail_server_admin mail_server_comment mail_shared_explicit_inbox mail_sort_max_read_count
    mail_temp_scan_interval mail_vsize_bg_after_count mailbox_idle_check_interval
    mailbox_list_index mailbox_list_index_include_inbox mailbox_list_index_very_dirty_syncs
    maildir_broken_filename_sizes maildir_copy_with_hardlinks maildir_empty_new
    maildir_stat_dirs maildir_very_dirty_syncs master_user_separator mbox_dirty_syncs
    mbox_dotlock_change_timeout mbox_lazy_writes mbox_lock_timeout mbox_md5
    mbox_min_index_size mbox_read_locks mbox_very_dirty_syncs mbox_write_locks
    mdbox_preallocate_space mdbox_rotate_interval mdbox_rotate_size mmap_disable
    old_stats_carbon_interval old_stats_carbon_name old_stats_carbon_server
    old_stats_command_min_time old_stats_domain_min_time old_stats_ip_min_time
    old_stats_memory_limit old_stats_session_min_time old_stats_user_min_time
    pop3c_features
    pop3c_host pop3c_master_user pop3c_password pop3c_port pop3c_quick_received_date
    pop3c_rawlog_dir pop3c_ssl pop3c_ssl_verify pop3c_user postmaster_address
    process_shutdown_filter quota_full_tempfail rawlog_dir
    rejection_reason rejection_subject replication_dsync_parameters
    replication_full_sync_interval replication_max_conns replicator_host replicator_port
    sendmail_path
    ssl_client_require_valid_cert ssl_crypto_device
    state_dir stats_http_rawlog_dir stats_writer_socket_path
    valid_chroot_dirs verbose_proctitle version_ignore
    """
)
#: Dovecot settings that its login, auth or master processes read (login-settings.c,
#: master-service-settings.c, master-service-ssl-settings.c, auth-settings.c,
#: master-settings.c, the protocols' login settings) and the doveadm server's: proxyd must
#: implement each, so the ones it does not implement yet are errors
HONOURED_TOP: Final = _PROTOCOL_NOT_YET | _names(
    """
    login_proxy_notify_path login_plugin_dir
    login_plugins login_proxy_rawlog_dir director_username_hash verbose_proctitle
    state_dir instance_name log_debug
    log_core_filter process_shutdown_filter
    stats_writer_socket_path config_cache_size version_ignore
    ssl_crypto_device ssl_client_require_valid_cert
    auth_cache_verify_password_with_worker
    auth_krb5_keytab
    auth_gssapi_hostname auth_winbind_helper_path auth_policy_check_after_auth
    auth_policy_check_before_auth auth_policy_hash_mech auth_policy_hash_nonce
    auth_policy_hash_truncate auth_policy_log_only auth_policy_reject_on_fail
    auth_policy_report_after_auth auth_policy_request_attributes auth_policy_server_api_header
    auth_policy_server_timeout_msecs auth_policy_server_url auth_stats auth_debug_passwords
    auth_verbose_passwords auth_use_winbind
    libexec_dir default_internal_group
    doveadm_allowed_commands doveadm_http_rawlog_dir
    doveadm_port doveadm_socket_path doveadm_ssl doveadm_username doveadm_worker_count
    """
)

#: the other Dovecot settings belong to services a proxy does not run (mail storage,
#: delivery, the imap/pop3/submission mail processes, director, replication, ...):
#: accepted so that a Dovecot tree loads, listed by ``proxyd -n``, never applied
UNUSED_TOP: Final = (DOVECOT_TOP - HONOURED_TOP) | frozenset(
    {"mail_location", "mail_uid", "mail_gid", "mail_privileged_group",
     "first_valid_uid", "last_valid_uid", "first_valid_gid", "last_valid_gid"}
)  # fmt: skip

#: settings of ``service NAME { }`` other than the roadmap ones
DOVECOT_SERVICE: Final = frozenset(
    {
        "name",
        "protocol",
        "type",
        "executable",
        "privileged_group",
        "extra_groups",
        "drop_priv_before_exec",
    }
)
#: sections allowed inside ``service NAME { }``
DOVECOT_SERVICE_SECTIONS: Final = frozenset({"inet_listener", "unix_listener", "fifo_listener"})
#: passdb settings Dovecot has and proxyd does not implement
DOVECOT_PASSDB: Final = frozenset({"mechanisms", "username_filter", "auth_verbose"})
DOVECOT_SERVICES: Final = _names(
    """
    aggregator anvil auth auth-worker config dict dict-async director dns-client doveadm
    health-check imap imap-hibernate imap-login imap-urlauth imap-urlauth-login
    imap-urlauth-worker indexer indexer-worker ipc lmtp log managesieve managesieve-login
    old-stats pop3 pop3-login quota-status replicator stats submission submission-login tcpwrap
    """
)
#: services proxyd runs besides the login services: its auth process
AUTH_SERVICE: Final = "auth"
#: top-level sections of processes a proxy does not run: accepted, listed, never applied
UNUSED_SECTIONS: Final = frozenset({"namespace", "plugin", "dict", "metric", "event_exporter"})
#: top-level sections Dovecot knows; the ones proxyd handles are dealt with by name in load.py
DOVECOT_SECTIONS: Final = frozenset(
    {"service", "passdb", "userdb", "namespace", "plugin", "protocol", "local", "remote",
     "local_name", "dict", "metric", "event_exporter"}
)  # fmt: skip
#: filter sections: they change settings per protocol / address, so they are never ignored
FILTER_SECTIONS: Final = frozenset({"protocol", "local", "remote", "local_name"})
#: settings a ``protocol``/``local``/``remote`` block may change: what a login process
#: resolves per connection, and the auth process per protocol (FILTER_AUTH; Dovecot's
#: auth process reads its settings per protocol only, so these are refused in
#: ``local``/``remote`` blocks)
FILTER_LOGIN: Final = frozenset().union(*(p.settings.per_connection for p in registry.PROTOCOLS)) | frozenset(
    {"login_greeting", "disable_plaintext_auth", "ssl", "ssl_cert", "ssl_key", "ssl_ca",
     "ssl_min_protocol", "login_trusted_networks",
     "login_proxy_timeout", "login_proxy_max_reconnects", "ssl_dh", "ssl_cipher_list",
     "ssl_alt_cert", "ssl_alt_key", "ssl_key_password",
     "ssl_cipher_suites", "ssl_curve_list", "ssl_prefer_server_ciphers", "ssl_options",
     "verbose_ssl", "login_log_format_elements", "login_log_format"}
)  # fmt: skip
#: shared settings a filter block may change for some protocols' services only (``hostname``:
#: submission-login resolves it per connection, the LMTP service reads it once): setting ->
#: the protocols whose plugins say so (``ProtocolSettings.shared_per_connection``)
FILTER_BY_PROTOCOL: Final[Mapping[str, frozenset[str]]] = {
    name: frozenset(p.name for p in registry.PROTOCOLS if name in p.settings.shared_per_connection)
    for name in frozenset().union(*(p.settings.shared_per_connection for p in registry.PROTOCOLS))
}
#: settings a service reads once per process: setting -> the protocols whose top-level
#: ``protocol`` block may set them (``ProtocolSettings.per_process``)
FILTER_PER_PROCESS: Final[Mapping[str, frozenset[str]]] = {
    name: frozenset(p.name for p in registry.PROTOCOLS if name in p.settings.per_process)
    for name in frozenset().union(*(p.settings.per_process for p in registry.PROTOCOLS))
}
FILTER_AUTH: Final = frozenset(
    {"auth_mechanisms", "auth_username_chars", "auth_username_translation",
     "auth_username_format", "auth_default_realm"}
)  # fmt: skip

#: keys a ``userdb { }`` block may hold (Dovecot's auth_userdb_settings)
USERDB_KEYS: Final = frozenset(
    {"name", "driver", "args", "default_fields", "override_fields", "skip",
     "result_success", "result_failure", "result_internalfail", "auth_verbose"}
)  # fmt: skip


def not_supported(name: str) -> str:
    """The error text for a known setting that proxyd does not implement (yet)."""
    return f"setting '{name}' is not supported yet"


def variable_defaults() -> dict[str, str]:
    """What ``$name`` gives for a top-level setting that the file has not set."""
    # settings of services a proxy does not run: what they hold is never applied, but
    # Dovecot trees build on them ("mail_plugins = $mail_plugins sieve" in protocol lmtp)
    defaults = dict.fromkeys(UNUSED_TOP, "")
    defaults.update(_OTHER_DEFAULTS)
    defaults.update(ROADMAP_TOP)
    defaults.update({name: spec.default for name, spec in TOP.items()})
    # Debian's default (and what its protocols.d files build on): "$protocols imap"
    # in a file with only imapd.protocol gives "imap", not proxyd's default plus imap
    defaults["protocols"] = ""
    return defaults


#: names that are sections: ``$service`` is ``Invalid variable``
SECTION_NAMES: Final = DOVECOT_SECTIONS
