#!/usr/bin/env bash
# Scan a voipgw TLS listener on 127.0.0.1 with testssl.sh and print a summary.
#
#   benchmarks/testssl_scan.sh            # --fast scan (about 1-2 minutes)
#   benchmarks/testssl_scan.sh --full     # every check testssl.sh has (several minutes)
#   KEEP=1 benchmarks/testssl_scan.sh     # keep the work directory (config, logs, JSON)
#
# Starts `python -m gateway run` with a TLS listener on a free port, the generated self-signed
# certificate and the default server-only mode (testssl.sh 3.0 cannot present a client
# certificate, so a mutual-mode listener cannot be scanned with it), runs testssl.sh against
# it with that certificate as trusted CA, prints every finding above INFO and a few key ones,
# and stops the gateway. Needs the Debian package testssl.sh (`apt-get install testssl.sh`).
# Not run by CI: the interop tests cover versions and suites; this is the independent audit.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
SCAN=(--fast)
if [ "${1:-}" = "--full" ]; then SCAN=(); fi
TESTSSL="$(command -v testssl || command -v testssl.sh || true)"
if [ -z "$TESTSSL" ]; then
  echo "testssl.sh is not installed: apt-get install testssl.sh" >&2
  exit 2
fi

WORK="$(mktemp -d -t voipgw-testssl.XXXXXX)"
GATEWAY_PID=""
cleanup() {
  if [ -n "$GATEWAY_PID" ]; then kill "$GATEWAY_PID" 2>/dev/null || true; wait "$GATEWAY_PID" 2>/dev/null || true; fi
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "work directory kept: $WORK"; fi
}
trap cleanup EXIT

PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat > "$WORK/voipgw.toml" <<EOF
[gateway]
state_dir = "$WORK/state"
[sip]
listen = ["tls:127.0.0.1:$PORT"]
[plugins]
enable = ["tls"]
[plugins.tls]
mode = "server-only"
EOF

"$PYTHON" -m gateway run --config "$WORK/voipgw.toml" > "$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
for _ in $(seq 1 200); do
  if "$PYTHON" -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 0.2).close()" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then cat "$WORK/gateway.log" >&2; exit 1; fi
  sleep 0.05
done

VERSION="$("$TESTSSL" --version 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'testssl  *[0-9][0-9.]*' | head -1 || true)"
echo "voipgw TLS listener 127.0.0.1:$PORT; ${VERSION:-testssl.sh}"
echo "certificate: $WORK/state/tls/gateway.crt (generated, self-signed ECDSA P-256)"
START=$(date +%s)
# testssl.sh exits non-zero when it finds anything to report; the JSON is what counts.
timeout -k 5 900 "$TESTSSL" --quiet "${SCAN[@]}" --nodns none --ip 127.0.0.1 --warnings off \
  --connect-timeout 5 --openssl-timeout 5 --color 0 \
  --add-ca "$WORK/state/tls/gateway.crt" \
  --jsonfile "$WORK/testssl.json" "127.0.0.1:$PORT" > "$WORK/testssl.log" 2>&1 || true
echo "scan took $(( $(date +%s) - START )) s"

"$PYTHON" - "$WORK/testssl.json" <<'EOF'
import collections
import json
import sys

findings = json.load(open(sys.argv[1]))
by_severity = collections.Counter(f["severity"] for f in findings)
print("findings by severity:", ", ".join(f"{k} {v}" for k, v in sorted(by_severity.items())))
KEY = [
    "SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3",
    "cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
    "cipherlist_3DES_IDEA", "cipherlist_AVERAGE", "cipherlist_STRONG",
    "PFS", "PFS_ECDHE_curves", "cipher_order", "protocol_negotiated", "cipher_negotiated",
    "cert_keySize", "cert_chain_of_trust", "cert_trust",
    "secure_renego", "secure_client_renego", "CRIME_TLS", "BREACH", "POODLE_SSL",
    "BEAST", "LUCKY13", "SWEET32", "ROBOT", "heartbleed", "TLS_session_ticket",
    "sessionresumption_ticket", "sessionresumption_ID",
]
rows = {f["id"]: f for f in findings}
print()
print("key results:")
for key in KEY:
    if key in rows:
        print(f"  {key:24} {rows[key]['severity']:8} {rows[key]['finding']}")
print()
print("suites offered (testssl's list):")
for f in findings:
    if f["id"].startswith("cipher_x"):
        print("  " + " ".join(f["finding"].split()))
print()
print("above INFO/OK:")
bad = [f for f in findings if f["severity"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN")]
for f in bad:
    print(f"  {f['id']:24} {f['severity']:8} {f['finding']}")
if not bad:
    print("  none")
EOF
