#pragma once
// What the AMQP sender and receiver share (amqp_driver.cpp says how the
// driver works): rabbitmq-c connections, error mapping, field tables, the
// declarations both roles make, and the I/O thread's wake-up.

#include <amqp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tls.hpp"
#include "drivers/amqp/envelope.hpp"
#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus::detail::amqp {

using SteadyClock = std::chrono::steady_clock;

constexpr amqp_channel_t kChannel = 1;
constexpr int kFrameMax = 131072;  // RabbitMQ's default frame_max
constexpr std::chrono::milliseconds kBackoffMin{100};
constexpr std::chrono::milliseconds kBackoffMax{5000};

inline std::string str(amqp_bytes_t b) {
  return b.len ? std::string(static_cast<const char*>(b.bytes), b.len) : std::string();
}
inline amqp_bytes_t bytes_of(std::string_view s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }

struct ConnDeleter {
  void operator()(amqp_connection_state_t c) const { amqp_destroy_connection(c); }
};
using ConnHandle = std::unique_ptr<amqp_connection_state_t_, ConnDeleter>;

// The Error a rabbitmq-c status (negative), an AMQP reply code (positive) or
// an RPC reply means; `context` says what was being done.
Error status_error(int status, const std::string& context);
Error reply_code_error(int reply_code, const std::string& text, const std::string& context, bool connection_level);
Error reply_error(const amqp_rpc_reply_t& r, const std::string& context);
// Throws the error a channel.close or connection.close method frame carries;
// returns for any other frame.
void throw_if_closed(const amqp_frame_t& frame);

// Storage for an amqp_table_t built from strings we own.
struct TableBuilder {
  std::deque<std::string> strings;  // deque: stable addresses
  std::vector<amqp_table_entry_t> entries;

  void add(const std::string& name, const std::string& value, bool typed) {
    amqp_table_entry_t e{};
    e.key = bytes_of(strings.emplace_back(name));
    if (typed && value == "true") {
      e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
      e.value.value.boolean = 1;
    } else if (typed && value == "false") {
      e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
      e.value.value.boolean = 0;
    } else if (typed && !value.empty() && value.find_first_not_of("-0123456789") == std::string::npos &&
               value.find('-', 1) == std::string::npos && value != "-") {
      e.value.kind = AMQP_FIELD_KIND_I64;
      e.value.value.i64 = std::stoll(value);
    } else {
      e.value.kind = AMQP_FIELD_KIND_UTF8;
      e.value.value.bytes = bytes_of(strings.emplace_back(value));
    }
    entries.push_back(e);
  }
  amqp_table_t table() { return amqp_table_t{static_cast<int>(entries.size()), entries.empty() ? nullptr : entries.data()}; }
};

// A received field as the envelope reads it (envelope.hpp).
Field to_field(const amqp_field_value_t& v);

struct ConnSettings {
  std::string host;
  int port = 5672;
  std::string user = "guest";
  std::string password = "guest";
  std::string vhost = "/";
  int heartbeat = 30;
  std::chrono::milliseconds connect_timeout{10000};
  std::string where;  // host:port vhost, for messages
  // amqps:// only: TLS, the CA that signed the broker's certificate, the client certificate.
  bool tls = false;
  TlsFiles tls_files;  // amqps://: CA, client certificate and key, verification of the broker
  bool external = false;  // SASL EXTERNAL: the client certificate is the login (no password)
  std::string identity;   // EXTERNAL: the identity sent (the URL's user, else the certificate's CN)
};

// Throws InvalidArgument for a URL without a host, and for TLS options on an
// amqp:// (plaintext) URL.
ConnSettings conn_settings(const Url& url, const OptionValues& o);

// One AMQP connection with channel 1 open. Blocks up to the connect timeout;
// throws Unavailable (not retryable for refused credentials or vhost). The
// handle is not thread-safe: owned by one thread at a time (the opener, then
// the I/O thread).
ConnHandle connect(const ConnSettings& s);
// Throws the error of the last RPC on `c`, if it failed.
void check_rpc(amqp_connection_state_t c, const std::string& context);
// Closes the channel and the connection politely (bounded by the RPC
// timeout) when `polite`, then frees it.
void close_conn(ConnHandle& conn, bool polite);

// What both roles declare. Throws NotFound (passive check of a missing
// exchange), InvalidArgument (inequivalent arguments), Unavailable.
struct Topology {
  std::string exchange;
  std::string exchange_type;
  bool declare = true;
  bool reserved_exchange = false;  // "amq.*": the broker's own, checked passively
  bool durable = true;
  std::string queue;  // named queue to declare and bind ("" none)
  bool private_queue = false;
  bool auto_delete = false;
  std::string binding_key;
  std::vector<std::pair<std::string, std::string>> queue_args;
  std::vector<std::pair<std::string, std::string>> bind_args;

  // Returns the queue name (the server's for a private queue). Blocks for the
  // broker's replies; throws as above.
  std::string apply(amqp_connection_state_t c, const std::string& where) const;
};

// Throws InvalidArgument for a standard exchange given another type, or a
// subscriber with neither exchange nor queue.
Topology topology(const Url& url, const OptionValues& o, bool receiver);

Capabilities amqp_capabilities(bool confirm, std::size_t max_bytes);

// eventfd that wakes an I/O thread out of poll().
class Waker {
 public:
  Waker() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw Error(ErrorCode::Internal, std::string("eventfd: ") + std::strerror(errno), errno);
  }
  ~Waker() { ::close(fd_); }
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;
  void wake() {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one);
  }
  void drain() {
    std::uint64_t v;
    [[maybe_unused]] auto n = ::read(fd_, &v, sizeof v);
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Waits until the connection has input or the waker fires, up to `timeout`.
// Returns true when input is (or may be) ready.
bool wait_input(amqp_connection_state_t c, Waker& waker, std::chrono::milliseconds timeout);

inline timeval zero_tv() { return timeval{0, 0}; }

// TCP_CORK for the scope: the kernel sends full packets only, and what is
// left when the scope ends.
class Cork {
 public:
  explicit Cork(int fd) : fd_(fd) { set(1); }
  ~Cork() { set(0); }
  Cork(const Cork&) = delete;
  Cork& operator=(const Cork&) = delete;

 private:
  void set(int on) {
    if (fd_ >= 0) ::setsockopt(fd_, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
  }
  int fd_;
};

// The two roles (sender.cpp, receiver.cpp): each connects before it returns
// (throws as connect() and Topology::apply do) and runs one I/O thread.
std::shared_ptr<Sender> make_amqp_sender(const Url& url, const OptionValues& o);
std::shared_ptr<Receiver> make_amqp_receiver(const Url& url, const OptionValues& o);

}  // namespace omnibus::detail::amqp
