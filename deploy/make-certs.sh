#!/bin/sh
# A private CA and a server certificate for Mosquitto's TLS listener (8883).
#   deploy/make-certs.sh DIR HOSTNAME [IP]
# DIR gets ca.crt (give it to the devices: locker-client MQTT_CA / --cafile), ca.key (keep it
# offline: it signs server certificates), server.crt and server.key (mosquitto.conf certfile
# and keyfile; chown the key to the mosquitto user, mode 0600). HOSTNAME (and IP, if given)
# must be what devices connect to. Valid 825 days: renew before, by running it again with
# the same DIR (the CA is kept, so devices need nothing new).
set -eu
if [ $# -lt 2 ]; then
  echo "usage: $0 DIR HOSTNAME [IP]" >&2
  exit 2
fi
dir=$1
host=$2
ip=${3:-}
umask 077
mkdir -p "$dir"
if [ ! -f "$dir/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=locker-console MQTT CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
fi
san="DNS:$host"
if [ -n "$ip" ]; then san="$san,IP:$ip"; fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=$host" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > "$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
  -CAcreateserial -days 825 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
rm -f "$dir/server.csr" "$dir/server.ext"
chmod 644 "$dir/ca.crt" "$dir/server.crt"
echo "$dir: ca.crt (for devices), server.crt + server.key (for mosquitto), ca.key (keep offline)"
