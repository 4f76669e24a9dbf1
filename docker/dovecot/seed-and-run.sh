#!/bin/sh
# docker-compose.yml's backends: give every user of /etc/dovecot/users (demo/backend-users)
# one message whose Subject names this backend (BACKEND_NAME, BACKEND_ADDRESS),
# as scripts/demo.sh does for the local twin, then run Dovecot in the foreground.
set -eu
# shellcheck disable=SC2013  # user names have no blanks
for user in $(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' /etc/dovecot/users | cut -d: -f1); do
    dir="/srv/mail/$user"
    [ -d "$dir/new" ] && continue
    mkdir -p "$dir/cur" "$dir/new" "$dir/tmp"
    printf '%s\r\n' \
        "From: demo@proxyd.invalid" "To: $user@proxyd.invalid" \
        "Subject: Hello $user, this is $BACKEND_NAME ($BACKEND_ADDRESS)" \
        "Date: $(date -R)" "Message-ID: <$BACKEND_NAME.$user@proxyd-demo>" "" \
        "This message is stored on $BACKEND_NAME, the Dovecot at $BACKEND_ADDRESS." \
        >"$dir/new/$(date +%s).M1P$$.$BACKEND_NAME"
done
chown -R 1000:1000 /srv/mail
exec /usr/sbin/dovecot -F
