#pragma once
// Second opinions on a failed connection, for error messages: whether a port takes TCP at all, and
// why a TLS handshake with it fails, in OpenSSL's words. For drivers whose native library says
// only "connect failed" or "certificate verify failed" (Paho, librdkafka, rabbitmq-c); each costs
// one more connection, made only after the library's own attempt failed.
// Built when OpenSSL is (OMNIBUS_HAVE_TLS_PROBE); thread-safe; blocking, bounded by `timeout`.
#include <chrono>
#include <cstdint>
#include <string>

#include "core/tls.hpp"

namespace omnibus::detail {

// A TCP connection to host:port (a name is resolved, blocking) within `timeout`: the connected,
// non-blocking socket, owned by the caller, or -1 when refused, unreachable or not answered in time.
int tcp_connect(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout);

// Whether host:port accepts a TCP connection within `timeout` (tells a refused or unreachable port
// from one that took the connection and dropped the client, as a TLS listener does to plaintext).
bool tcp_accepts(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout);

// Handshakes with address:port as the client library would (the CA, client certificate and check
// of `host` in `t`) and returns OpenSSL's reason with the certificate check's, e.g.
// "certificate verify failed (hostname mismatch)"; empty when the port cannot be reached, the
// peer closed without a TLS answer (a plaintext listener) or the handshake succeeds. Never throws.
std::string tls_handshake_failure(const std::string& address, std::uint16_t port, const std::string& host,
                                  const TlsFiles& t, std::chrono::milliseconds timeout);

// The subject common name of the first certificate in the PEM file `path`; empty when the file
// cannot be read or has none. Never throws.
std::string certificate_common_name(const std::string& path);

}  // namespace omnibus::detail
