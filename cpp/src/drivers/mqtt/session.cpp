#include "drivers/mqtt/session.hpp"

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "core/backoff.hpp"

namespace omnibus::detail::mqtt {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

std::string connack_text(std::uint8_t rc, Version v) {
  if (v == Version::V311) {
    static const char* texts[] = {"accepted", "unacceptable protocol version", "client identifier rejected",
                                  "server unavailable", "bad user name or password", "not authorized"};
    return rc < 6 ? texts[rc] : "return code " + std::to_string(rc);
  }
  switch (rc) {
    case 0x84: return "unsupported protocol version";
    case 0x85: return "client identifier not valid";
    case 0x86: return "bad user name or password";
    case 0x87: return "not authorized";
    case 0x88: return "server unavailable";
    case 0x89: return "server busy";
    case 0x8A: return "banned";
    case 0x95: return "packet too large";
    case 0x97: return "quota exceeded";
    case 0x9F: return "connection rate exceeded";
    default: return "reason code " + std::to_string(rc);
  }
}

}  // namespace

struct Session::Impl {
  enum class State { AwaitAck, AwaitRec, AwaitComp };
  struct Out {
    std::string wire;         // the PUBLISH, packet id patched in when sent
    std::size_t id_offset = 0;  // where the packet id goes (QoS > 0)
    std::uint8_t qos = 0;
    Done done;
    State state = State::AwaitAck;
    std::uint64_t seq = 0;
  };
  struct PendingSub {
    Packet packet;
    SubDone done;
    std::uint64_t seq;
  };
  struct Held {
    std::uint8_t qos;
  };
  // One TCP connection: handlers hold it, so its buffers live as long as an
  // operation on them, and compare it with conn_ to ignore a connection that
  // has since been replaced.
  struct Conn {
    explicit Conn(asio::io_context& io) : sock(io) {}
    tcp::socket sock;
    std::string rbuf;
    std::array<char, 65536> chunk{};
    std::string wbuf, wnext;
    std::vector<Done> written, next_written;  // QoS 0 completions, per write
    bool writing = false;
    bool up = false;  // CONNACK accepted
    bool ping_out = false;
    // DISCONNECT is queued: nothing more may be written (see send()).
    bool said_goodbye = false;
    Clock::time_point last_sent = Clock::now(), ping_sent;
  };

  SessionOptions opt;
  OnMessage on_message;
  OnState on_state;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  tcp::resolver resolver{io};
  asio::steady_timer connect_timer{io};
  asio::steady_timer keepalive_timer{io};
  std::thread thread;
  Backoff backoff;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<Out> queue;  // from publish(), for the io thread
  bool pump_posted = false;
  bool closed = false;
  bool connected = false;
  bool refused = false;  // the broker said no to the first CONNECT
  std::optional<Error> last_error;
  std::atomic<std::size_t> unacked{0};

  // io thread only
  std::shared_ptr<Conn> conn;
  std::deque<Out> waiting;
  std::map<std::uint16_t, Out> inflight;
  std::map<std::uint16_t, PendingSub> subs_inflight;
  std::vector<std::pair<std::vector<Subscription>, Properties>> subscriptions;
  std::map<std::uint16_t, Held> held;             // delivered, not yet acked (manual ack)
  std::map<std::uint16_t, bool> inbound_qos2;     // PUBREC sent, PUBREL awaited
  std::uint64_t generation = 1;
  std::uint64_t seq = 0;
  std::uint16_t next_id = 1;
  std::uint16_t server_receive_max = 65535;
  std::uint32_t server_max_packet = kMaxVarInt;
  std::uint16_t keep_alive_s;
  bool closing = false;
  std::size_t attempt_host = 0;
  std::string current;  // host:port of the connection being made or held
  Properties connack;   // of the last CONNACK accepted, under mu

  Impl(SessionOptions o, OnMessage m, OnState s)
      : opt(std::move(o)), on_message(std::move(m)), on_state(std::move(s)),
        backoff(opt.reconnect_min, opt.reconnect_max), keep_alive_s(opt.keep_alive_s) {}

  std::string where() const {
    if (opt.failover.empty()) return opt.host + ":" + std::to_string(opt.port);
    std::string w;
    for (const auto& [h, p] : opt.failover) w += (w.empty() ? "" : ",") + h + ":" + std::to_string(p);
    return w;
  }

  void log(const std::string& s) {
    if (opt.log) opt.log(s);
  }

  // ------------------------------------------------------------ connecting

  void connect() {
    if (closing) return;
    auto c = std::make_shared<Conn>(io);
    conn = c;
    connect_timer.expires_after(opt.connect_timeout);
    connect_timer.async_wait([this, c](const boost::system::error_code& ec) {
      if (!ec && c == conn && !c->up) fail("no CONNACK within " + std::to_string(opt.connect_timeout.count()) + " ms");
    });
    const auto& [host, port] = opt.failover.empty() ? std::pair(opt.host, opt.port) : opt.failover[attempt_host];
    current = host + ":" + std::to_string(port);
    resolver.async_resolve(host, std::to_string(port),
                           [this, c](const boost::system::error_code& ec, tcp::resolver::results_type results) {
                             if (c != conn) return;
                             if (ec) return fail("cannot resolve the host name: " + ec.message());
                             asio::async_connect(c->sock, results,
                                                 [this, c](const boost::system::error_code& ec, const tcp::endpoint&) {
                                                   if (c != conn) return;
                                                   if (ec) return fail("cannot connect: " + ec.message());
                                                   on_tcp_connected(c);
                                                 });
                           });
  }

  void on_tcp_connected(const std::shared_ptr<Conn>& c) {
    boost::system::error_code ignored;
    c->sock.set_option(tcp::no_delay(true), ignored);
    Connect p;
    p.version = opt.version;
    p.clean_start = opt.clean_start;
    p.keep_alive = opt.keep_alive_s;
    p.client_id = opt.client_id;
    p.will = opt.will;
    p.username = opt.username;
    p.password = opt.password;
    if (opt.version == Version::V5) {
      if (opt.session_expiry_s) p.properties.session_expiry_interval = opt.session_expiry_s;
      p.properties.receive_maximum = opt.receive_maximum;
      if (opt.max_packet_size < kMaxVarInt) p.properties.maximum_packet_size = opt.max_packet_size;
    }
    encode(p, opt.version, c->wnext);
    start_write(c);
    read(c);
  }

  // Drops the connection (if any) and schedules the next attempt.
  void fail(const std::string& why) {
    if (closing) {
      log("MQTT: connection ended while closing: " + why);
      return shut();
    }
    auto c = conn;
    if (!c) return;
    conn.reset();
    const bool was_up = c->up;
    boost::system::error_code ignored;
    c->sock.close(ignored);
    for (auto& d : c->written) lost(d);
    for (auto& d : c->next_written) lost(d);
    connect_timer.cancel();
    keepalive_timer.cancel();
    log("MQTT: connection lost: " + why);
    {
      std::lock_guard lock(mu);
      connected = false;
      if (!refused) last_error = Error(ErrorCode::Unavailable, "MQTT: " + current + ": " + why);
    }
    cv.notify_all();
    if (was_up && on_state) on_state(false, why);
    if (closing) return;
    // A failover list is tried in order, one host per attempt.
    if (!was_up && !opt.failover.empty()) attempt_host = (attempt_host + 1) % opt.failover.size();
    connect_timer.expires_after(backoff.next());
    connect_timer.async_wait([this](const boost::system::error_code& ec) {
      if (!ec && !conn) connect();
    });
  }

  void lost(Done& d) {
    if (!d) return;
    const Error e(ErrorCode::Unavailable, "MQTT: the connection broke before a QoS 0 message was written");
    d(&e);
  }

  // ------------------------------------------------------------ writing

  void start_write(const std::shared_ptr<Conn>& c) {
    if (c->writing || c->wnext.empty()) return;
    c->wbuf.swap(c->wnext);
    c->wnext.clear();
    c->written.swap(c->next_written);
    c->writing = true;
    asio::async_write(c->sock, asio::buffer(c->wbuf), [this, c](const boost::system::error_code& ec, std::size_t) {
      c->writing = false;
      if (c != conn) return;
      if (ec) return fail("write failed: " + ec.message());
      c->last_sent = Clock::now();
      auto done = std::move(c->written);
      c->written.clear();
      for (auto& d : done)
        if (d) d(nullptr);
      if (closing && c->wnext.empty()) {
        // DISCONNECT is out. Close only our side and wait for the broker to
        // close its own: closing the socket now could reset the connection,
        // and a reset makes the broker drop what it received but has not
        // read yet (our last acknowledgements). The read loop ends it.
        boost::system::error_code ignored;
        c->sock.shutdown(tcp::socket::shutdown_send, ignored);
        return;
      }
      start_write(c);
    });
  }

  // Nothing goes out after DISCONNECT. Once it is written our side is shut
  // for sending, so a later packet (the PUBCOMP answering a PUBREL that
  // crossed our DISCONNECT) fails with EPIPE, and the close that follows
  // resets the connection. Mosquitto writes before it reads and drops a
  // connection whose write failed, so the reset made it discard the acks
  // it had received but not read yet: an ack given just before close() was
  // lost and its message delivered again. What is dropped here is settled
  // on the next connection of the session (the broker sends PUBREL again).
  void send(const Packet& p) {
    if (opt.log) log(std::string("MQTT: sending ") + packet_name(type_of(p)));
    if (!conn) return;
    if (conn->said_goodbye) return log("MQTT: not sent, DISCONNECT is out");
    encode(p, opt.version, conn->wnext);
    start_write(conn);
  }

  std::uint16_t allocate_id() {
    for (int i = 0; i < 65535; ++i) {
      const std::uint16_t id = next_id;
      next_id = next_id == 65535 ? 1 : next_id + 1;
      if (!inflight.count(id) && !subs_inflight.count(id)) return id;
    }
    return 0;
  }

  // Moves what publish() queued into the window and onto the wire.
  void pump() {
    {
      std::lock_guard lock(mu);
      pump_posted = false;
      for (auto& o : queue) waiting.push_back(std::move(o));
      queue.clear();
    }
    auto c = conn;
    if (!c || !c->up || c->said_goodbye) return;
    const std::size_t window = std::min<std::size_t>(opt.max_inflight, server_receive_max);
    while (!waiting.empty()) {
      Out& o = waiting.front();
      if (o.wire.size() > server_max_packet) {
        const Error e(ErrorCode::ResourceExhausted, "MQTT: a PUBLISH of " + std::to_string(o.wire.size()) +
                                                        " bytes exceeds the broker's maximum packet size of " +
                                                        std::to_string(server_max_packet));
        complete(o, &e);
        waiting.pop_front();
        continue;
      }
      if (o.qos == 0) {
        c->wnext.append(o.wire);
        c->next_written.push_back(std::move(o.done));
        waiting.pop_front();
        continue;
      }
      if (inflight.size() >= window) break;
      const std::uint16_t id = allocate_id();
      if (!id) break;
      o.wire[o.id_offset] = static_cast<char>(id >> 8);
      o.wire[o.id_offset + 1] = static_cast<char>(id & 0xff);
      o.state = o.qos == 1 ? State::AwaitAck : State::AwaitRec;
      o.seq = ++seq;
      c->wnext.append(o.wire);
      inflight.emplace(id, std::move(o));
      waiting.pop_front();
    }
    start_write(c);
  }

  void complete(Out& o, const Error* e) {
    if (o.qos > 0) {
      // Under the lock, so close() cannot miss the wake-up between its check
      // and its wait; before `done`, so that done sees the count without it.
      std::lock_guard lock(mu);
      --unacked;
    }
    cv.notify_all();
    if (o.done) o.done(e);
  }

  // ------------------------------------------------------------ reading

  void read(const std::shared_ptr<Conn>& c) {
    c->sock.async_read_some(asio::buffer(c->chunk), [this, c](const boost::system::error_code& ec, std::size_t n) {
      if (c != conn) return;
      if (ec) return fail(ec == asio::error::eof ? "the broker closed the connection" : "read failed: " + ec.message());
      c->rbuf.append(c->chunk.data(), n);
      std::size_t used = 0;
      try {
        while (true) {
          const std::string_view rest = std::string_view(c->rbuf).substr(used);
          const auto size = frame_size(rest, opt.max_packet_size);
          if (!size) break;
          Packet p = decode(rest.substr(0, *size), opt.version);
          used += *size;
          handle(c, std::move(p));
          if (c != conn) return;
        }
      } catch (const PacketError& e) {
        if (opt.version == Version::V5) send(Disconnect{PacketType::Disconnect, e.reason(), {}});
        return fail(e.what());
      }
      c->rbuf.erase(0, used);
      read(c);
    });
  }

  void handle(const std::shared_ptr<Conn>& c, Packet&& packet) {
    if (opt.log) log(std::string("MQTT: received ") + packet_name(type_of(packet)));
    c->ping_out = false;  // anything from the broker shows it is alive
    if (!c->up && !std::holds_alternative<Connack>(packet))
      return fail(std::string("the broker sent ") + packet_name(type_of(packet)) + " before CONNACK");
    std::visit([&](auto& p) { on(c, p); }, packet);
  }

  void on(const std::shared_ptr<Conn>& c, Connack& p) {
    if (c->up) return fail("a second CONNACK");
    connect_timer.cancel();
    if (p.reason_code != 0) {
      const std::string why = "the broker refused the connection: " + connack_text(p.reason_code, opt.version);
      {
        std::lock_guard lock(mu);
        if (!connected_once) {
          refused = true;
          last_error = Error(ErrorCode::Unavailable, "MQTT: " + why, p.reason_code);
        }
      }
      return fail(why);
    }
    c->up = true;
    backoff.reset();
    server_receive_max = p.properties.receive_maximum.value_or(65535);
    server_max_packet = p.properties.maximum_packet_size.value_or(kMaxVarInt);
    if (p.properties.server_keep_alive) keep_alive_s = *p.properties.server_keep_alive;
    if (p.properties.assigned_client_identifier) opt.client_id = *p.properties.assigned_client_identifier;
    // Reconnects resume the session this connection holds.
    opt.clean_start = false;
    if (!p.session_present) {
      ++generation;  // tokens of the old session's messages mean nothing now
      held.clear();
      inbound_qos2.clear();
      for (auto it = inflight.begin(); it != inflight.end();) {
        if (it->second.state == State::AwaitComp) {  // the broker had it: PUBREC came
          complete(it->second, nullptr);
          it = inflight.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& [id, o] : inflight)
      if (o.state != State::AwaitComp && p.session_present) o.wire[0] = static_cast<char>(o.wire[0] | 0x08);  // DUP
    // In original order: PUBLISH and PUBREL alike (§4.6).
    std::vector<std::pair<std::uint64_t, std::uint16_t>> order;
    for (auto& [id, o] : inflight) order.emplace_back(o.seq, id);
    std::sort(order.begin(), order.end());
    for (auto& [s, id] : order) {
      auto& o = inflight.at(id);
      if (o.state == State::AwaitComp) encode(Ack{PacketType::Pubrel, id, 0, {}}, opt.version, c->wnext);
      else c->wnext.append(o.wire);
    }
    for (auto& [id, s] : subs_inflight) encode(s.packet, opt.version, c->wnext);
    // Pending SUBSCRIBEs went out above; on a lost session the ones already
    // acknowledged are made again.
    if (!p.session_present && connected_once)
      for (auto& [subs, props] : subscriptions) {
        const std::uint16_t id = allocate_id();
        if (!id) break;
        Subscribe s{id, props, subs};
        encode(s, opt.version, c->wnext);
        subs_inflight.emplace(id, PendingSub{s, {}, ++seq});
      }
    {
      std::lock_guard lock(mu);
      connected = true;
      connected_once = true;
      last_error.reset();
      connack = p.properties;
    }
    cv.notify_all();
    if (on_state) on_state(true, p.session_present ? "session resumed" : "new session");
    keepalive(c);
    pump();
    start_write(c);
  }
  bool connected_once = false;

  void on(const std::shared_ptr<Conn>& c, Publish& p) {
    const std::uint16_t id = p.packet_id;
    if (p.qos == 0) return on_message(Inbound{std::move(p), 0});
    if (p.qos == 2 && inbound_qos2.count(id)) {
      // Ours already (PUBREC sent): say so again, deliver nothing (§4.3.3).
      return send(Ack{PacketType::Pubrec, id, 0, {}});
    }
    if (held.count(id)) return;  // the application holds it and will ack it
    // Our Receive Maximum is announced, not enforced: MQTT 5 (§3.3.4) lets a
    // client disconnect a broker that exceeds it, but Mosquitto 2.0.11 was
    // seen sending one message more while acknowledgements crossed its
    // sends, and dropping the connection for that would cost far more than
    // holding one message.
    if (opt.auto_ack) {
      const std::uint8_t qos = p.qos;
      on_message(Inbound{std::move(p), 0});
      if (c != conn) return;
      if (qos == 1) return send(Ack{PacketType::Puback, id, 0, {}});
      inbound_qos2[id] = true;
      return send(Ack{PacketType::Pubrec, id, 0, {}});
    }
    held[id] = Held{p.qos};
    on_message(Inbound{std::move(p), (generation << 16) | id});
  }

  void acknowledge(std::uint64_t token) {
    if ((token >> 16) != generation) return;
    const auto id = static_cast<std::uint16_t>(token & 0xffff);
    auto it = held.find(id);
    if (it == held.end()) return;
    const std::uint8_t qos = it->second.qos;
    held.erase(it);
    // Offline, nothing can be sent: the broker sends the message again on the
    // resumed session and it is delivered again (at-least-once).
    if (!conn || !conn->up) return;
    if (qos == 1) return send(Ack{PacketType::Puback, id, 0, {}});
    inbound_qos2[id] = true;
    send(Ack{PacketType::Pubrec, id, 0, {}});
  }

  void on(const std::shared_ptr<Conn>&, Ack& a) {
    const bool v5 = opt.version == Version::V5;
    auto it = inflight.find(a.packet_id);
    switch (a.type) {
      case PacketType::Puback:
      case PacketType::Pubcomp: {
        const State want = a.type == PacketType::Puback ? State::AwaitAck : State::AwaitComp;
        if (it == inflight.end() || it->second.state != want) return log("MQTT: unexpected acknowledgement ignored");
        std::optional<Error> e;
        if (a.reason_code >= 0x80)
          e = Error(ErrorCode::Unavailable, "MQTT: the broker refused the message: reason code " +
                                                std::to_string(a.reason_code) +
                                                (a.properties.reason_string ? " (" + *a.properties.reason_string + ")" : ""));
        complete(it->second, e ? &*e : nullptr);
        inflight.erase(it);
        return pump();
      }
      case PacketType::Pubrec: {
        if (it == inflight.end()) {
          if (v5) send(Ack{PacketType::Pubrel, a.packet_id, reason::PacketIdentifierNotFound, {}});
          return;
        }
        if (a.reason_code >= 0x80) {
          const Error e(ErrorCode::Unavailable, "MQTT: the broker refused the message: reason code " +
                                                    std::to_string(a.reason_code));
          complete(it->second, &e);
          inflight.erase(it);
          return pump();
        }
        it->second.state = State::AwaitComp;
        return send(Ack{PacketType::Pubrel, a.packet_id, 0, {}});
      }
      case PacketType::Pubrel: {
        const bool known = inbound_qos2.erase(a.packet_id) > 0;
        return send(Ack{PacketType::Pubcomp, a.packet_id,
                        static_cast<std::uint8_t>(known || !v5 ? 0 : reason::PacketIdentifierNotFound), {}});
      }
      default:
        return;
    }
  }

  void on(const std::shared_ptr<Conn>&, SubAck& s) {
    auto it = subs_inflight.find(s.packet_id);
    if (it == subs_inflight.end()) return;
    auto done = std::move(it->second.done);
    subs_inflight.erase(it);
    if (done) done(nullptr, s.reason_codes);
  }

  void on(const std::shared_ptr<Conn>&, Ping& p) {
    if (p.type == PacketType::Pingreq) fail("the broker sent PINGREQ");
  }

  void on(const std::shared_ptr<Conn>&, Disconnect& d) {
    fail(d.type == PacketType::Auth ? "the broker asked for AUTH, which this client does not do"
                                    : "the broker sent DISCONNECT (reason code " + std::to_string(d.reason_code) +
                                          (d.properties.reason_string ? ", " + *d.properties.reason_string : "") + ")");
  }

  template <class P>
  void on(const std::shared_ptr<Conn>&, P&) {
    fail("the broker sent a packet only clients send");
  }

  // ------------------------------------------------------------ keepalive

  void keepalive(const std::shared_ptr<Conn>& c) {
    if (keep_alive_s == 0) return;
    const auto period = std::chrono::milliseconds(keep_alive_s) * 1000;
    keepalive_timer.expires_after(std::max(std::chrono::milliseconds(100), period / 4));
    keepalive_timer.async_wait([this, c, period](const boost::system::error_code& ec) {
      if (ec || c != conn) return;
      const auto now = Clock::now();
      // The dead-connection timeout: a PINGREQ unanswered for a whole keepalive period.
      if (c->ping_out && now - c->ping_sent >= period)
        return fail("no answer to PINGREQ within " + std::to_string(keep_alive_s) + " s");
      if (!c->ping_out && now - c->last_sent >= period * 3 / 4) {
        c->ping_out = true;
        c->ping_sent = now;
        send(Ping{PacketType::Pingreq});
      }
      keepalive(c);
    });
  }

  // ------------------------------------------------------------ closing

  void shut() {
    if (conn) {
      boost::system::error_code ignored;
      conn->sock.shutdown(tcp::socket::shutdown_both, ignored);
      conn->sock.close(ignored);
      conn.reset();
    }
    connect_timer.cancel();
    keepalive_timer.cancel();
    io.stop();
  }
};

Session::Session(SessionOptions options, OnMessage on_message, OnState on_state)
    : impl_(std::make_shared<Impl>(std::move(options), std::move(on_message), std::move(on_state))) {
  Impl* i = impl_.get();
  {
    // What the CONNECT cannot carry (a client id or will that is not MQTT
    // UTF-8...) is the caller's error, now, not a silent failure on the io thread.
    Connect probe;
    probe.version = i->opt.version;
    probe.client_id = i->opt.client_id;
    probe.will = i->opt.will;
    probe.username = i->opt.username;
    probe.password = i->opt.password;
    std::string scratch;
    encode(probe, probe.version, scratch);
  }
  asio::post(i->io, [i] { i->connect(); });
  i->thread = std::thread([i] {
    // Callbacks must not throw (session.hpp); one that does anyway must not
    // take the process down with std::terminate: say so and keep running.
    for (;;) {
      try {
        i->io.run();
        return;
      } catch (const std::exception& e) {
        i->log(std::string("MQTT: a callback threw, ignored: ") + e.what());
      }
    }
  });
}

Session::~Session() { close(std::chrono::milliseconds(0)); }

void Session::wait_connected(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mu);
  const auto deadline = Clock::now() + timeout;
  while (!impl_->connected) {
    if (impl_->refused || impl_->closed) throw impl_->last_error ? *impl_->last_error : Error(ErrorCode::Closed, "MQTT: closed");
    if (impl_->cv.wait_until(lock, deadline) == std::cv_status::timeout && !impl_->connected) {
      if (impl_->last_error) throw *impl_->last_error;
      throw Error(ErrorCode::Timeout, "MQTT: no connection to " + impl_->where() + " within " +
                                          std::to_string(timeout.count()) + " ms");
    }
  }
}

void Session::publish(std::string topic, std::string payload, std::uint8_t qos, bool retain, Properties properties,
                      Done done) {
  Impl* i = impl_.get();
  Impl::Out o;
  o.qos = qos;
  o.done = std::move(done);
  encode_publish(i->opt.version, topic, payload, qos, retain, false, 1, &properties, o.wire);
  if (qos > 0) {
    std::size_t header = 1;
    while (static_cast<std::uint8_t>(o.wire[header]) & 0x80) ++header;
    o.id_offset = header + 1 + 2 + topic.size();
  }
  std::lock_guard lock(i->mu);
  if (i->closed) throw Error(ErrorCode::Closed, "MQTT: publish after close");
  if (qos > 0) ++i->unacked;
  i->queue.push_back(std::move(o));
  if (!i->pump_posted) {
    i->pump_posted = true;
    asio::post(i->io, [i] { i->pump(); });
  }
}

void Session::subscribe(std::vector<Subscription> subscriptions, Properties properties, SubDone done) {
  Impl* i = impl_.get();
  {
    // Validate now, on the caller's thread, so a bad filter is the caller's error.
    std::string scratch;
    encode(Subscribe{1, properties, subscriptions}, i->opt.version, scratch);
  }
  std::lock_guard lock(i->mu);
  if (i->closed) throw Error(ErrorCode::Closed, "MQTT: subscribe after close");
  asio::post(i->io, [i, subs = std::move(subscriptions), props = std::move(properties), done = std::move(done)]() mutable {
    i->subscriptions.emplace_back(subs, props);
    const std::uint16_t id = i->allocate_id();
    Subscribe s{id, std::move(props), std::move(subs)};
    if (i->conn && i->conn->up) encode(s, i->opt.version, i->conn->wnext);
    i->subs_inflight.emplace(id, Impl::PendingSub{std::move(s), std::move(done), ++i->seq});
    if (i->conn && i->conn->up) i->start_write(i->conn);
  });
}

void Session::unsubscribe(std::vector<std::string> filters, SubDone done) {
  Impl* i = impl_.get();
  {
    std::string scratch;
    encode(Unsubscribe{1, {}, filters}, i->opt.version, scratch);
  }
  std::lock_guard lock(i->mu);
  if (i->closed) throw Error(ErrorCode::Closed, "MQTT: unsubscribe after close");
  asio::post(i->io, [i, filters = std::move(filters), done = std::move(done)]() mutable {
    for (auto& [subs, props] : i->subscriptions)
      subs.erase(std::remove_if(subs.begin(), subs.end(),
                                [&](const Subscription& s) {
                                  return std::find(filters.begin(), filters.end(), s.filter) != filters.end();
                                }),
                 subs.end());
    const std::uint16_t id = i->allocate_id();
    Unsubscribe u{id, {}, std::move(filters)};
    if (i->conn && i->conn->up) encode(u, i->opt.version, i->conn->wnext);
    i->subs_inflight.emplace(id, Impl::PendingSub{std::move(u), std::move(done), ++i->seq});
    if (i->conn && i->conn->up) i->start_write(i->conn);
  });
}

void Session::ack(std::uint64_t token) {
  Impl* i = impl_.get();
  std::lock_guard lock(i->mu);
  if (i->closed) return;
  asio::post(i->io, [i, token] { i->acknowledge(token); });
}

std::size_t Session::unacknowledged() const { return impl_->unacked.load(); }

Properties Session::connack_properties() const {
  std::lock_guard lock(impl_->mu);
  return impl_->connack;
}

bool Session::connected() const {
  std::lock_guard lock(impl_->mu);
  return impl_->connected;
}

void Session::close(std::chrono::milliseconds drain) {
  Impl* i = impl_.get();
  {
    std::unique_lock lock(i->mu);
    if (i->closed) return;
    i->cv.wait_for(lock, drain, [i] { return i->unacked.load() == 0; });
    i->closed = true;
  }
  asio::post(i->io, [i] {
    i->closing = true;
    if (i->conn && i->conn->up) {
      // Acks given before close() were posted before this, so they are in
      // wnext already and leave ahead of DISCONNECT, in the same stream.
      encode(Disconnect{}, i->opt.version, i->conn->wnext);
      i->conn->said_goodbye = true;
      i->start_write(i->conn);
      // A broker that stops reading must not hold close() up.
      i->keepalive_timer.expires_after(std::chrono::seconds(1));
      i->keepalive_timer.async_wait([i](const boost::system::error_code& ec) {
        if (!ec) i->shut();
      });
    } else {
      i->shut();
    }
  });
  i->work.reset();
  if (i->thread.joinable()) i->thread.join();
  // The io thread is gone: what never completed completes here, on the closer's thread.
  const Error closed(ErrorCode::Closed, "MQTT: the session closed before the broker acknowledged the message");
  {
    std::lock_guard lock(i->mu);
    for (auto& o : i->queue) i->waiting.push_back(std::move(o));
    i->queue.clear();
  }
  for (auto& o : i->waiting) {
    if (o.done) o.done(&closed);
  }
  for (auto& [id, o] : i->inflight)
    if (o.done) o.done(&closed);
  for (auto& [id, s] : i->subs_inflight)
    if (s.done) s.done(&closed, {});
  i->waiting.clear();
  i->inflight.clear();
  i->subs_inflight.clear();
  i->unacked = 0;
}

}  // namespace omnibus::detail::mqtt
