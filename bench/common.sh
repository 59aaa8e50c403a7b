# Shared by the bench scripts (sourced, not run).

# A free loopback TCP port.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A P-256 key and certificate for localhost in $1 (key.pem, cert.pem): an end-entity
# certificate, not a CA, since rustls clients refuse a CA as a server's certificate.
bench_certificate() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$1/key.pem" 2>/dev/null
  openssl req -new -x509 -key "$1/key.pem" -out "$1/cert.pem" -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
    -addext keyUsage=digitalSignature -addext extendedKeyUsage=serverAuth 2>/dev/null
}
