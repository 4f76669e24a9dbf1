#!/bin/sh
# proxyd-demo-certs DIR: the demo's CA (DIR/ca.pem) and a certificate for the
# proxyd nodes (DIR/cert.pem, DIR/key.pem), as scripts/demo.sh makes them for
# the local twin.  Does nothing when DIR/cert.pem exists.
set -eu
dir=${1:-/etc/proxyd/tls}
[ -s "$dir/cert.pem" ] && exit 0
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=proxyd demo CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout key.pem -out cert.csr 2>/dev/null
printf '%s\n' "subjectAltName=DNS:localhost,DNS:proxyd-a,DNS:proxyd-b,IP:127.0.0.1,IP:127.0.0.6" \
    "basicConstraints=CA:FALSE" "extendedKeyUsage=serverAuth" >cert.ext
openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -extfile cert.ext -out cert.pem 2>/dev/null
rm -f ca.key cert.csr cert.ext ca.srl
chmod 600 key.pem
echo "proxyd-demo-certs: made $dir/ca.pem, cert.pem, key.pem"
