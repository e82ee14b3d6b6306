#!/usr/bin/env bash
# Makes the certificates of the TLS variant (docker-compose.tls.yml) with openssl: one CA
# that signs lumberd's server certificate and the client certificates, ECDSA P-256 keys.
#
#   deploy/compose/tls/make-certs.sh [DIR]     # default: deploy/compose/tls
#
#   DIR/lumberd/   ca.crt, lumberd.crt + lumberd.key (SAN DNS:lumberd, DNS:localhost,
#                  IP:127.0.0.1), probe.crt + probe.key (the health check's client)
#   DIR/filebeat/  ca.crt, filebeat.crt + filebeat.key (CN filebeat)
#
# For a local stack; in production use your own PKI with the same names. Existing files
# are kept: delete DIR/lumberd and DIR/filebeat to make new ones.
set -euo pipefail
DIR=${1:-$(dirname "$0")}
DAYS=${CERT_DAYS:-825}
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is required" >&2; exit 1; }
mkdir -p "$DIR/lumberd" "$DIR/filebeat"
if [[ -f $DIR/lumberd/lumberd.crt && -f $DIR/filebeat/filebeat.crt ]]; then
  echo "make-certs.sh: certificates already in $DIR (delete them to make new ones)"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
# issue NAME SUBJECT EXTENSIONS: a certificate for NAME's key, signed by the CA
issue() {
  key "$work/$1.key"
  openssl req -new -key "$work/$1.key" -subj "$2" -out "$work/$1.csr"
  printf '%s\n' "$3" >"$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -days "$DAYS" -sha256 -extfile "$work/$1.ext" -out "$work/$1.crt" 2>/dev/null
}

key "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -subj "/O=Qwen logging stack/CN=Qwen logging stack CA" \
  -days "$DAYS" -sha256 -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$work/ca.crt"
issue lumberd "/O=Qwen logging stack/CN=lumberd" \
  "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:lumberd,DNS:localhost,IP:127.0.0.1"
for client in filebeat probe; do
  issue "$client" "/O=Qwen logging stack/CN=$client" \
    "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:$client"
done

install -m 0644 "$work/ca.crt" "$DIR/lumberd/ca.crt"
install -m 0644 "$work/ca.crt" "$DIR/filebeat/ca.crt"
install -m 0644 "$work/lumberd.crt" "$work/probe.crt" "$DIR/lumberd/"
install -m 0644 "$work/filebeat.crt" "$DIR/filebeat/"
install -m 0600 "$work/filebeat.key" "$DIR/filebeat/"   # Filebeat runs as root
# lumberd runs as uid 10001 in its image and must read its keys.
install -m 0600 "$work/lumberd.key" "$work/probe.key" "$DIR/lumberd/"
if [[ $(id -u) -eq 0 ]]; then
  chown 10001:10001 "$DIR/lumberd/lumberd.key" "$DIR/lumberd/probe.key"
else
  chmod 0644 "$DIR/lumberd/lumberd.key" "$DIR/lumberd/probe.key"
  echo "make-certs.sh: not root, so lumberd's keys are world-readable (0644) for its uid 10001" >&2
fi
echo "make-certs.sh: wrote $DIR/lumberd and $DIR/filebeat"
