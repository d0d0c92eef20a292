#include "core/tls_probe.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

namespace omnibus::detail {

using SteadyClock = std::chrono::steady_clock;

int tcp_connect(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICSERV;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* ai = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &ai) != 0 || !ai) return -1;
  int fd = -1;
  // Each address in turn ("localhost" may list ::1 first, where an IPv4-only listener refuses).
  for (const addrinfo* a = ai; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    bool ok = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    if (!ok && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof err;
      ok = ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 &&
           ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
    if (!ok) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(ai);
  return fd;
}

bool tcp_accepts(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout) {
  int fd = tcp_connect(host, port, timeout);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

std::string tls_handshake_failure(const std::string& address, std::uint16_t port, const std::string& host,
                                  const TlsFiles& t, std::chrono::milliseconds timeout) {
  // OpenSSL's error queue is per thread and shared with the library the caller goes on using on
  // this thread (rabbitmq-c, say): start and leave it empty.
  struct ClearErrors {
    ClearErrors() { ::ERR_clear_error(); }
    ~ClearErrors() { ::ERR_clear_error(); }
  } clear_errors;
  auto last_error = [] {
    const char* r = ::ERR_reason_error_string(::ERR_peek_last_error());
    return std::string(r ? r : "unknown reason");
  };
  std::unique_ptr<SSL_CTX, decltype(&::SSL_CTX_free)> ctx(::SSL_CTX_new(::TLS_client_method()), &::SSL_CTX_free);
  if (!ctx) return {};
  if (t.ca.empty() ? ::SSL_CTX_set_default_verify_paths(ctx.get()) != 1
                   : ::SSL_CTX_load_verify_locations(ctx.get(), t.ca.c_str(), nullptr) != 1)
    return "cannot load " + (t.ca.empty() ? std::string("the system's CAs") : t.ca) + ": " + last_error();
  if (!t.cert.empty() && (::SSL_CTX_use_certificate_chain_file(ctx.get(), t.cert.c_str()) != 1 ||
                          ::SSL_CTX_use_PrivateKey_file(ctx.get(), t.key.c_str(), SSL_FILETYPE_PEM) != 1))
    return "cannot use the client certificate " + t.cert + ": " + last_error();
  ::SSL_CTX_set_verify(ctx.get(), t.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  std::unique_ptr<SSL, decltype(&::SSL_free)> ssl(::SSL_new(ctx.get()), &::SSL_free);
  if (!ssl) return {};
  in6_addr ip{};
  bool literal = ::inet_pton(AF_INET, host.c_str(), &ip) == 1 || ::inet_pton(AF_INET6, host.c_str(), &ip) == 1;
  if (!literal) ::SSL_set_tlsext_host_name(ssl.get(), host.c_str());
  if (t.verify) {
    X509_VERIFY_PARAM* param = ::SSL_get0_param(ssl.get());
    if (literal)
      ::X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
    else
      ::X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
  }
  const auto deadline = SteadyClock::now() + timeout;
  int fd = tcp_connect(address, port, timeout);
  if (fd < 0) return {};
  std::string reason;
  if (::SSL_set_fd(ssl.get(), fd) == 1) {
    // The socket is non-blocking: drive the handshake with poll, within `timeout` in all.
    for (;;) {
      ::ERR_clear_error();
      int rc = ::SSL_connect(ssl.get());
      if (rc == 1) break;
      int err = ::SSL_get_error(ssl.get(), rc);
      short want = err == SSL_ERROR_WANT_READ ? POLLIN : err == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
      if (want) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
        pollfd p{fd, want, 0};
        if (left.count() > 0 && ::poll(&p, 1, static_cast<int>(left.count())) == 1) continue;
        break;
      }
      // EOF or a reset is no TLS answer at all (a plaintext listener), not a TLS refusal.
      if (err != SSL_ERROR_SSL || ERR_GET_REASON(::ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
        break;
      reason = last_error();
      long verify = ::SSL_get_verify_result(ssl.get());
      if (verify != X509_V_OK) reason += std::string(" (") + ::X509_verify_cert_error_string(verify) + ")";
      break;
    }
  }
  ssl.reset();  // before the socket it uses is closed
  ::close(fd);
  return reason;
}

std::string certificate_common_name(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "r"), &std::fclose);
  if (!f) return {};
  std::unique_ptr<X509, decltype(&::X509_free)> cert(::PEM_read_X509(f.get(), nullptr, nullptr, nullptr), &::X509_free);
  if (!cert) return {};
  char cn[256] = {0};
  if (::X509_NAME_get_text_by_NID(::X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof cn) <= 0) return {};
  return cn;
}

}  // namespace omnibus::detail
