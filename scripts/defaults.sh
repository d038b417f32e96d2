# Sourced by up.sh, test.sh, bench.sh, reliability.sh and stack.sh: defaults the set-up chooses for
# this machine. `source scripts/defaults.sh` in a shell gives redis-cli, wm and the TS client the same.
# Networks that intercept TLS (as this project's build machines do) need the host's CA bundle
# inside image builds; trusting the host's own bundle is harmless where they do not.
if [[ -z "${EXTRA_CA_CERTS:-}" && -f /etc/ssl/certs/ca-certificates.crt ]]; then
  export EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
fi

# The local Redis (scripts/stack.sh) lets nobody in without its password: with the default user
# open, any worker could skip its own ACL user. The password is random, made once per user (not per
# checkout: every clone and worktree on the machine shares the one Redis on the port) and kept in a
# file only its owner reads. The manager, wm, the tests and the bench get it in REDIS_URL, redis-cli
# in REDISCLI_AUTH; worker containers never get it (each has its own ACL user). A REDIS_URL set
# beforehand means a Redis of your own, and is left as it is.
export WM_REDIS_PASSWORD_FILE="${WM_REDIS_PASSWORD_FILE:-${XDG_CONFIG_HOME:-$HOME/.config}/worker-manager/redis.password}"
if [[ -z "${REDIS_URL:-}" ]]; then
  if [[ ! -s "$WM_REDIS_PASSWORD_FILE" ]]; then
    mkdir -p "$(dirname "$WM_REDIS_PASSWORD_FILE")"
    # Written aside and moved without overwriting: two first runs at once agree on one password.
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WM_REDIS_PASSWORD_FILE.$$" \
      && mv -n "$WM_REDIS_PASSWORD_FILE.$$" "$WM_REDIS_PASSWORD_FILE"; rm -f "$WM_REDIS_PASSWORD_FILE.$$")
  fi
  REDISCLI_AUTH="$(<"$WM_REDIS_PASSWORD_FILE")"
  export REDISCLI_AUTH
  export REDIS_URL="redis://:$REDISCLI_AUTH@127.0.0.1:${WM_REDIS_PORT:-6379}"
fi
