# Sourced by up.sh, test.sh and bench.sh: defaults the set-up chooses for this machine.
# Networks that intercept TLS (as this project's build machines do) need the host's CA bundle
# inside image builds; trusting the host's own bundle is harmless where they do not.
if [[ -z "${EXTRA_CA_CERTS:-}" && -f /etc/ssl/certs/ca-certificates.crt ]]; then
  export EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
fi
