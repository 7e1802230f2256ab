#!/bin/sh
# Redeploy the app on each host in turn, through its rainbowd, and stop at
# the first host whose deploy fails (that host keeps its old version).
#
#   TOKEN_FILE=~/.config/rainbowd/token ./rolling-deploy.sh 10.0.0.11 10.0.0.12 10.0.0.13
#       asks each host's control API (rainbowctl --control tcp:HOST:7001);
#   VIA=ssh APP_DIR=/srv/app ./rolling-deploy.sh web1 web2 web3
#       runs rainbowctl on each host over ssh instead (the token stays there).
#
# Put the new code on each host first (or in PREPARE, a command run there
# over ssh before its redeploy, e.g. PREPARE="git -C /srv/app pull").
# Exit status: 0 if every host deployed, 1 if one failed.
set -u
[ $# -gt 0 ] || { echo "usage: $0 HOST..." >&2; exit 2; }
RAINBOWCTL=${RAINBOWCTL:-rainbowctl}
done_hosts=
for host in "$@"; do
    echo "== $host"
    if [ -n "${PREPARE:-}" ] && ! ssh "$host" "$PREPARE"; then
        status=1
    elif [ "${VIA:-control}" = ssh ]; then
        ssh "$host" "cd '${APP_DIR:-.}' && rainbowctl redeploy"; status=$?
    else
        $RAINBOWCTL --control "tcp:$host:${CONTROL_PORT:-7001}" \
            ${TOKEN_FILE:+--token-file "$TOKEN_FILE"} redeploy; status=$?
    fi
    shift
    if [ "$status" -ne 0 ]; then
        echo "rolling deploy STOPPED: $host failed (exit $status)."
        echo "  deployed:  ${done_hosts:-none}"
        echo "  not tried: ${*:-none}"
        exit 1
    fi
    done_hosts="$done_hosts $host"
done
echo "rolling deploy done:$done_hosts"
