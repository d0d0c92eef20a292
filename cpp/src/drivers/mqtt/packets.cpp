#include "drivers/mqtt/packets.hpp"

#include <algorithm>
#include <initializer_list>

#include "core/utf8.hpp"

namespace omnibus::detail::mqtt {

namespace {

// A property's allowed places (§2.2.2.2): one bit per packet type, bit 0 for
// a will's properties in CONNECT.
constexpr std::uint32_t bit(PacketType t) { return 1u << static_cast<unsigned>(t); }
constexpr std::uint32_t kWill = 1u;
constexpr std::uint32_t kAcks = bit(PacketType::Puback) | bit(PacketType::Pubrec) | bit(PacketType::Pubrel) |
                                bit(PacketType::Pubcomp);
constexpr std::uint32_t kAll = kWill | bit(PacketType::Connect) | bit(PacketType::Connack) |
                               bit(PacketType::Publish) | kAcks | bit(PacketType::Subscribe) |
                               bit(PacketType::Suback) | bit(PacketType::Unsubscribe) |
                               bit(PacketType::Unsuback) | bit(PacketType::Disconnect) | bit(PacketType::Auth);
constexpr std::uint32_t kMessage = kWill | bit(PacketType::Publish);
constexpr std::uint32_t kConnect = bit(PacketType::Connect);
constexpr std::uint32_t kConnack = bit(PacketType::Connack);

// Binary Data (as opposed to UTF-8 string) properties.
struct Bin {
  std::optional<std::string>& v;
};
struct CBin {
  const std::optional<std::string>& v;
};

// Calls f(id, allowed, field) for each property field of p, in id order.
// Binary fields come wrapped in Bin/CBin so f can tell them from strings.
template <class P, class F>
void visit_properties(P& p, F&& f) {
  constexpr bool is_const = std::is_const_v<P>;
  auto bin = [](auto& field) {
    if constexpr (is_const) return CBin{field};
    else return Bin{field};
  };
  f(0x01, kMessage, p.payload_format_indicator);
  f(0x02, kMessage, p.message_expiry_interval);
  f(0x03, kMessage, p.content_type);
  f(0x08, kMessage, p.response_topic);
  f(0x09, kMessage, bin(p.correlation_data));
  f(0x0B, bit(PacketType::Publish) | bit(PacketType::Subscribe), p.subscription_identifiers);
  f(0x11, kConnect | kConnack | bit(PacketType::Disconnect), p.session_expiry_interval);
  f(0x12, kConnack, p.assigned_client_identifier);
  f(0x13, kConnack, p.server_keep_alive);
  f(0x15, kConnect | kConnack | bit(PacketType::Auth), p.authentication_method);
  f(0x16, kConnect | kConnack | bit(PacketType::Auth), bin(p.authentication_data));
  f(0x17, kConnect, p.request_problem_information);
  f(0x18, kWill, p.will_delay_interval);
  f(0x19, kConnect, p.request_response_information);
  f(0x1A, kConnack, p.response_information);
  f(0x1C, kConnack | bit(PacketType::Disconnect), p.server_reference);
  f(0x1F, kAll & ~(kMessage | kConnect | bit(PacketType::Subscribe) | bit(PacketType::Unsubscribe)),
    p.reason_string);
  f(0x21, kConnect | kConnack, p.receive_maximum);
  f(0x22, kConnect | kConnack, p.topic_alias_maximum);
  f(0x23, bit(PacketType::Publish), p.topic_alias);
  f(0x24, kConnack, p.maximum_qos);
  f(0x25, kConnack, p.retain_available);
  f(0x26, kAll, p.user_properties);
  f(0x27, kConnect | kConnack, p.maximum_packet_size);
  f(0x28, kConnack, p.wildcard_subscription_available);
  f(0x29, kConnack, p.subscription_identifier_available);
  f(0x2A, kConnack, p.shared_subscription_available);
}

const char* name_of(std::uint32_t place) {
  return place == kWill ? "will" : packet_name(static_cast<PacketType>(__builtin_ctz(place)));
}

// ---------------------------------------------------------------- encoding

[[noreturn]] void bad_argument(const std::string& what) { throw Error(ErrorCode::InvalidArgument, "MQTT: " + what); }

void put_u16(std::uint16_t v, std::string& out) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

void put_u32(std::uint32_t v, std::string& out) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void put_binary(std::string_view s, std::string& out, const char* what) {
  if (s.size() > kMaxStringBytes)
    bad_argument(std::string(what) + " is " + std::to_string(s.size()) + " bytes, MQTT allows at most 65535");
  put_u16(static_cast<std::uint16_t>(s.size()), out);
  out.append(s);
}

void put_string(std::string_view s, std::string& out, const char* what) {
  if (const char* problem = utf8_problem(s))
    bad_argument(std::string(what) + " " + printable(s.substr(0, 100)) + " " + problem +
                 "; MQTT strings must be UTF-8 of at most 65535 bytes without U+0000 or control characters");
  put_binary(s, out, what);
}

void put_properties(const Properties& p, std::uint32_t place, std::string& out) {
  std::string body;
  visit_properties(p, [&](std::uint8_t id, std::uint32_t allowed, const auto& field) {
    using T = std::decay_t<decltype(field)>;
    auto misplaced = [&] {
      bad_argument("property 0x" + std::to_string(id) + " cannot be sent in " + name_of(place));
    };
    if constexpr (std::is_same_v<T, UserProperties>) {
      if (field.empty()) return;
      if (!(allowed & place)) misplaced();
      for (const auto& [n, v] : field) {
        body.push_back(static_cast<char>(id));
        put_string(n, body, "user property name");
        put_string(v, body, "user property value");
      }
    } else if constexpr (std::is_same_v<T, std::vector<std::uint32_t>>) {
      if (field.empty()) return;
      if (!(allowed & place)) misplaced();
      for (auto v : field) {
        if (v == 0 || v > kMaxVarInt) bad_argument("a subscription identifier is 1..268435455");
        body.push_back(static_cast<char>(id));
        put_varint(v, body);
      }
    } else if constexpr (std::is_same_v<T, CBin>) {
      if (!field.v) return;
      if (!(allowed & place)) misplaced();
      body.push_back(static_cast<char>(id));
      put_binary(*field.v, body, "binary property");
    } else {
      if (!field) return;
      if (!(allowed & place)) misplaced();
      body.push_back(static_cast<char>(id));
      using V = typename T::value_type;
      if constexpr (std::is_same_v<V, std::string>) put_string(*field, body, "property");
      else if constexpr (std::is_same_v<V, std::uint8_t>) body.push_back(static_cast<char>(*field));
      else if constexpr (std::is_same_v<V, std::uint16_t>) put_u16(*field, body);
      else put_u32(*field, body);
    }
  });
  put_varint(static_cast<std::uint32_t>(std::min<std::size_t>(body.size(), kMaxVarInt)), out);
  out.append(body);
}

// Writes the fixed header for `body` and the body. A body past the MQTT limit
// cannot be framed at all.
void frame(std::uint8_t first, std::string_view body, std::string& out) {
  if (body.size() > kMaxVarInt)
    throw Error(ErrorCode::ResourceExhausted, "MQTT: a packet of " + std::to_string(body.size()) +
                                                  " bytes exceeds MQTT's limit of 268435455 bytes");
  out.push_back(static_cast<char>(first));
  put_varint(static_cast<std::uint32_t>(body.size()), out);
  out.append(body);
}

void check_qos(std::uint8_t qos) {
  if (qos > 2) bad_argument("QoS " + std::to_string(qos) + " does not exist; use 0, 1 or 2");
}

void check_id(std::uint16_t id, PacketType t) {
  if (id == 0) bad_argument(std::string(packet_name(t)) + " needs a packet identifier of 1..65535");
}

void put_publish_body(Version v, std::string_view topic, std::string_view payload, std::uint8_t qos,
                      std::uint16_t packet_id, const Properties* props, std::string& body) {
  if (topic.empty() && (v == Version::V311 || !props || !props->topic_alias))
    bad_argument("a PUBLISH needs a topic name (an empty one only with a topic alias)");
  put_string(topic, body, "topic");
  if (qos > 0) {
    check_id(packet_id, PacketType::Publish);
    put_u16(packet_id, body);
  }
  if (v == Version::V5) put_properties(props ? *props : Properties{}, bit(PacketType::Publish), body);
  else if (props && !props->empty()) bad_argument("MQTT 3.1.1 has no PUBLISH properties; use MQTT 5");
  body.append(payload);
}

void no_properties_in_311(const Properties& p, PacketType t) {
  if (!p.empty()) bad_argument(std::string("MQTT 3.1.1 has no ") + packet_name(t) + " properties; use MQTT 5");
}

struct Encoder {
  Version v;
  std::string& out;

  void operator()(const Connect& c) {
    std::string body;
    put_string("MQTT", body, "protocol name");
    body.push_back(static_cast<char>(c.version));
    std::uint8_t flags = c.clean_start ? 0x02 : 0;
    if (c.will) {
      check_qos(c.will->qos);
      flags |= 0x04 | static_cast<std::uint8_t>(c.will->qos << 3) | (c.will->retain ? 0x20 : 0);
    }
    if (c.password) {
      if (!c.username && c.version == Version::V311)
        bad_argument("MQTT 3.1.1 sends a password only with a user name");
      flags |= 0x40;
    }
    if (c.username) flags |= 0x80;
    body.push_back(static_cast<char>(flags));
    put_u16(c.keep_alive, body);
    if (c.version == Version::V5) put_properties(c.properties, kConnect, body);
    else no_properties_in_311(c.properties, PacketType::Connect);
    put_string(c.client_id, body, "client id");
    if (c.will) {
      if (c.version == Version::V5) put_properties(c.will->properties, kWill, body);
      else no_properties_in_311(c.will->properties, PacketType::Connect);
      put_string(c.will->topic, body, "will topic");
      put_binary(c.will->payload, body, "will payload");
    }
    if (c.username) put_string(*c.username, body, "user name");
    if (c.password) put_binary(*c.password, body, "password");
    frame(0x10, body, out);
  }

  void operator()(const Connack& c) {
    std::string body;
    body.push_back(c.session_present ? 1 : 0);
    body.push_back(static_cast<char>(c.reason_code));
    if (v == Version::V5) put_properties(c.properties, kConnack, body);
    else no_properties_in_311(c.properties, PacketType::Connack);
    frame(0x20, body, out);
  }

  void operator()(const Publish& p) {
    encode_publish(v, p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id, &p.properties, out);
  }

  void operator()(const Ack& a) {
    if (a.type < PacketType::Puback || a.type > PacketType::Pubcomp) bad_argument("not an acknowledgement type");
    check_id(a.packet_id, a.type);
    std::string body;
    put_u16(a.packet_id, body);
    if (v == Version::V5) {
      // §3.4.2.1: reason code and properties may be left out when they are
      // Success and none.
      if (a.reason_code != 0 || !a.properties.empty()) body.push_back(static_cast<char>(a.reason_code));
      if (!a.properties.empty()) put_properties(a.properties, bit(a.type), body);
    } else {
      if (a.reason_code != 0) bad_argument("MQTT 3.1.1 acknowledgements carry no reason code");
      no_properties_in_311(a.properties, a.type);
    }
    frame(static_cast<std::uint8_t>(static_cast<unsigned>(a.type) << 4) | (a.type == PacketType::Pubrel ? 2 : 0),
          body, out);
  }

  void operator()(const Subscribe& s) {
    check_id(s.packet_id, PacketType::Subscribe);
    if (s.subscriptions.empty()) bad_argument("a SUBSCRIBE needs at least one topic filter");
    std::string body;
    put_u16(s.packet_id, body);
    if (v == Version::V5) put_properties(s.properties, bit(PacketType::Subscribe), body);
    else no_properties_in_311(s.properties, PacketType::Subscribe);
    for (const auto& sub : s.subscriptions) {
      if (const char* problem = topic_filter_problem(sub.filter))
        bad_argument("topic filter " + printable(sub.filter) + ": " + problem);
      put_string(sub.filter, body, "topic filter");
      check_qos(sub.qos);
      std::uint8_t options = sub.qos;
      if (v == Version::V5) {
        if (sub.retain_handling > 2) bad_argument("retain handling is 0, 1 or 2");
        options |= (sub.no_local ? 0x04 : 0) | (sub.retain_as_published ? 0x08 : 0) |
                   static_cast<std::uint8_t>(sub.retain_handling << 4);
      } else if (sub.no_local || sub.retain_as_published || sub.retain_handling) {
        bad_argument("no_local, retain_as_published and retain_handling need MQTT 5");
      }
      body.push_back(static_cast<char>(options));
    }
    frame(0x82, body, out);
  }

  void operator()(const SubAck& s) {
    if (s.type != PacketType::Suback && s.type != PacketType::Unsuback) bad_argument("not SUBACK or UNSUBACK");
    std::string body;
    put_u16(s.packet_id, body);
    if (v == Version::V5) put_properties(s.properties, bit(s.type), body);
    else no_properties_in_311(s.properties, s.type);
    if (v == Version::V5 || s.type == PacketType::Suback)
      for (auto rc : s.reason_codes) body.push_back(static_cast<char>(rc));
    frame(static_cast<std::uint8_t>(static_cast<unsigned>(s.type) << 4), body, out);
  }

  void operator()(const Unsubscribe& u) {
    check_id(u.packet_id, PacketType::Unsubscribe);
    if (u.filters.empty()) bad_argument("an UNSUBSCRIBE needs at least one topic filter");
    std::string body;
    put_u16(u.packet_id, body);
    if (v == Version::V5) put_properties(u.properties, bit(PacketType::Unsubscribe), body);
    else no_properties_in_311(u.properties, PacketType::Unsubscribe);
    for (const auto& f : u.filters) put_string(f, body, "topic filter");
    frame(0xA2, body, out);
  }

  void operator()(const Ping& p) {
    if (p.type != PacketType::Pingreq && p.type != PacketType::Pingresp) bad_argument("not PINGREQ or PINGRESP");
    out.push_back(static_cast<char>(static_cast<unsigned>(p.type) << 4));
    out.push_back(0);
  }

  void operator()(const Disconnect& d) {
    std::string body;
    if (d.type == PacketType::Auth && v != Version::V5) bad_argument("AUTH needs MQTT 5");
    if (v == Version::V5) {
      if (d.reason_code != 0 || !d.properties.empty()) body.push_back(static_cast<char>(d.reason_code));
      if (!d.properties.empty()) put_properties(d.properties, bit(d.type), body);
    } else {
      if (d.reason_code != 0) bad_argument("MQTT 3.1.1's DISCONNECT carries no reason code");
      no_properties_in_311(d.properties, d.type);
    }
    frame(static_cast<std::uint8_t>(static_cast<unsigned>(d.type) << 4), body, out);
  }
};

// ---------------------------------------------------------------- decoding

struct Reader {
  std::string_view s;
  std::size_t pos = 0;
  PacketType type;

  [[noreturn]] void fail(std::uint8_t reason, const std::string& what) const {
    throw PacketError(reason, std::string("MQTT: ") + (reason == reason::MalformedPacket ? "malformed " : "invalid ") +
                                  packet_name(type) + " from the peer: " + what);
  }
  [[noreturn]] void malformed(const std::string& what) const { fail(reason::MalformedPacket, what); }
  [[noreturn]] void protocol(const std::string& what) const { fail(reason::ProtocolError, what); }

  std::size_t left() const { return s.size() - pos; }
  bool done() const { return pos == s.size(); }
  void need(std::size_t n, const char* what) const {
    if (left() < n)
      malformed(std::string(what) + " needs " + std::to_string(n) + " bytes, " + std::to_string(left()) + " left");
  }
  std::uint8_t u8(const char* what) {
    need(1, what);
    return static_cast<std::uint8_t>(s[pos++]);
  }
  std::uint16_t u16(const char* what) {
    need(2, what);
    auto v = static_cast<std::uint16_t>((static_cast<std::uint8_t>(s[pos]) << 8) | static_cast<std::uint8_t>(s[pos + 1]));
    pos += 2;
    return v;
  }
  std::uint32_t u32(const char* what) {
    need(4, what);
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<std::uint8_t>(s[pos + i]);
    pos += 4;
    return v;
  }
  std::uint32_t varint(const char* what) {
    std::uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      const std::uint8_t b = u8(what);
      value |= static_cast<std::uint32_t>(b & 0x7f) << (7 * i);
      if (!(b & 0x80)) {
        // §1.5.5: the minimal number of bytes.
        if (i > 0 && b == 0) malformed(std::string(what) + " is not encoded in the fewest bytes");
        return value;
      }
    }
    malformed(std::string(what) + " is a variable byte integer longer than 4 bytes");
  }
  std::string_view bytes(std::size_t n, const char* what) {
    need(n, what);
    auto v = s.substr(pos, n);
    pos += n;
    return v;
  }
  std::string binary(const char* what) { return std::string(bytes(u16(what), what)); }
  std::string text(const char* what) {
    auto v = bytes(u16(what), what);
    for (std::size_t i = 0; i < v.size();) {
      const auto step = utf8_step(v, i);
      if (step.fault != Utf8Fault::None) malformed(std::string(what) + " is not well-formed UTF-8");
      if (step.code_point == 0) malformed(std::string(what) + " contains U+0000");
      i += step.length;
    }
    return std::string(v);
  }
  std::uint16_t packet_id() {
    auto id = u16("packet identifier");
    if (id == 0) malformed("packet identifier 0");
    return id;
  }

  Properties properties(std::uint32_t place) {
    Properties p;
    const std::uint32_t length = varint("property length");
    need(length, "properties");
    Reader r{s.substr(pos, length), 0, type};
    pos += length;
    while (!r.done()) {
      const std::uint32_t id = r.varint("property identifier");
      bool known = false;
      visit_properties(p, [&](std::uint8_t fid, std::uint32_t allowed, auto&& field) {
        if (fid != id) return;
        known = true;
        if (!(allowed & place))
          r.protocol("property 0x" + hex(fid) + " is not allowed in " + name_of(place));
        using T = std::decay_t<decltype(field)>;
        auto once = [&](bool present) {
          if (present) r.protocol("property 0x" + hex(fid) + " appears twice");
        };
        if constexpr (std::is_same_v<T, UserProperties>) {
          auto n = r.text("user property name");
          field.emplace_back(std::move(n), r.text("user property value"));
        } else if constexpr (std::is_same_v<T, std::vector<std::uint32_t>>) {
          if (!field.empty() && place != bit(PacketType::Publish)) r.protocol("subscription identifier appears twice");
          auto v = r.varint("subscription identifier");
          if (v == 0) r.protocol("subscription identifier 0");
          field.push_back(v);
        } else if constexpr (std::is_same_v<T, Bin>) {
          once(field.v.has_value());
          field.v = r.binary("binary property");
        } else {
          once(field.has_value());
          using V = typename T::value_type;
          if constexpr (std::is_same_v<V, std::string>) field = r.text("property");
          else if constexpr (std::is_same_v<V, std::uint8_t>) field = r.u8("property");
          else if constexpr (std::is_same_v<V, std::uint16_t>) field = r.u16("property");
          else field = r.u32("property");
        }
      });
      if (!known) r.malformed("unknown property identifier 0x" + hex(id));
    }
    check_values(p);
    return p;
  }

  static std::string hex(std::uint32_t v) {
    static const char* digits = "0123456789ABCDEF";
    std::string out;
    do {
      out.insert(out.begin(), digits[v % 16]);
      v /= 16;
    } while (v);
    if (out.size() < 2) out.insert(out.begin(), '0');
    return out;
  }

  void check_values(const Properties& p) const {
    auto flag = [&](const std::optional<std::uint8_t>& f, const char* what) {
      if (f && *f > 1) protocol(std::string(what) + " is " + std::to_string(*f) + ", not 0 or 1");
    };
    flag(p.payload_format_indicator, "payload format indicator");
    flag(p.request_problem_information, "request problem information");
    flag(p.request_response_information, "request response information");
    flag(p.maximum_qos, "maximum QoS");
    flag(p.retain_available, "retain available");
    flag(p.wildcard_subscription_available, "wildcard subscription available");
    flag(p.subscription_identifier_available, "subscription identifier available");
    flag(p.shared_subscription_available, "shared subscription available");
    if (p.receive_maximum && *p.receive_maximum == 0) protocol("receive maximum 0");
    if (p.maximum_packet_size && *p.maximum_packet_size == 0) protocol("maximum packet size 0");
    if (p.topic_alias && *p.topic_alias == 0) protocol("topic alias 0");
  }

  void end() const {
    if (!done()) malformed(std::to_string(left()) + " bytes after its end");
  }
};

bool one_of(std::uint8_t rc, std::initializer_list<std::uint8_t> valid) {
  return std::find(valid.begin(), valid.end(), rc) != valid.end();
}

Packet decode_body(Reader& r, std::uint8_t flags, Version v) {
  const bool v5 = v == Version::V5;
  switch (r.type) {
    case PacketType::Connect: {
      Connect c;
      if (r.text("protocol name") != "MQTT") r.protocol("protocol name is not MQTT");
      const auto level = r.u8("protocol level");
      if (level != 4 && level != 5) r.protocol("protocol level " + std::to_string(level) + " is neither 4 nor 5");
      c.version = static_cast<Version>(level);
      const bool cv5 = c.version == Version::V5;
      const auto f = r.u8("connect flags");
      if (f & 0x01) r.malformed("the reserved connect flag is set");
      c.clean_start = f & 0x02;
      const bool will = f & 0x04;
      const std::uint8_t will_qos = (f >> 3) & 3;
      const bool will_retain = f & 0x20;
      if (will_qos == 3) r.malformed("will QoS 3");
      if (!will && (will_qos || will_retain)) r.malformed("will QoS or retain without a will");
      if (!cv5 && (f & 0x40) && !(f & 0x80)) r.malformed("a password without a user name");
      c.keep_alive = r.u16("keep alive");
      if (cv5) c.properties = r.properties(kConnect);
      c.client_id = r.text("client identifier");
      if (will) {
        Will w;
        w.qos = will_qos;
        w.retain = will_retain;
        if (cv5) w.properties = r.properties(kWill);
        w.topic = r.text("will topic");
        w.payload = r.binary("will payload");
        c.will = std::move(w);
      }
      if (f & 0x80) c.username = r.text("user name");
      if (f & 0x40) c.password = r.binary("password");
      r.end();
      return c;
    }
    case PacketType::Connack: {
      Connack c;
      const auto f = r.u8("acknowledge flags");
      if (f & 0xfe) r.malformed("reserved acknowledge flags are set");
      c.session_present = f & 1;
      c.reason_code = r.u8("reason code");
      if (!v5 && c.reason_code > 5) r.malformed("return code " + std::to_string(c.reason_code));
      if (v5 && c.reason_code != 0 && c.reason_code < 0x80)
        r.malformed("reason code 0x" + Reader::hex(c.reason_code) + " is not a CONNACK reason code");
      if (c.session_present && c.reason_code != 0) r.protocol("session present with a failure");
      if (v5) c.properties = r.properties(kConnack);
      r.end();
      return c;
    }
    case PacketType::Publish: {
      Publish p;
      p.dup = flags & 0x08;
      p.qos = (flags >> 1) & 3;
      p.retain = flags & 0x01;
      if (p.qos == 3) r.malformed("QoS 3");
      if (p.qos == 0 && p.dup) r.malformed("DUP set on a QoS 0 message");
      p.topic = r.text("topic name");
      if (p.topic.find_first_of("+#") != std::string::npos) r.protocol("topic name with a wildcard");
      if (p.qos > 0) p.packet_id = r.packet_id();
      if (v5) p.properties = r.properties(bit(PacketType::Publish));
      if (p.topic.empty() && !p.properties.topic_alias) r.protocol("empty topic name without a topic alias");
      p.payload = std::string(r.s.substr(r.pos));
      r.pos = r.s.size();
      return p;
    }
    case PacketType::Puback:
    case PacketType::Pubrec:
    case PacketType::Pubrel:
    case PacketType::Pubcomp: {
      Ack a;
      a.type = r.type;
      a.packet_id = r.packet_id();
      if (v5 && !r.done()) {
        a.reason_code = r.u8("reason code");
        if (!r.done()) a.properties = r.properties(bit(r.type));
        const bool valid = (r.type == PacketType::Pubrel || r.type == PacketType::Pubcomp)
                               ? one_of(a.reason_code, {0x00, 0x92})
                               : one_of(a.reason_code, {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99});
        if (!valid) r.malformed("reason code 0x" + Reader::hex(a.reason_code));
      }
      r.end();
      return a;
    }
    case PacketType::Subscribe: {
      Subscribe s;
      s.packet_id = r.packet_id();
      if (v5) s.properties = r.properties(bit(PacketType::Subscribe));
      while (!r.done()) {
        Subscription sub;
        sub.filter = r.text("topic filter");
        if (const char* problem = topic_filter_problem(sub.filter)) r.protocol(std::string("topic filter ") + problem);
        const auto o = r.u8("subscription options");
        sub.qos = o & 3;
        if (sub.qos == 3) r.malformed("QoS 3");
        if (v5) {
          if (o & 0xc0) r.malformed("reserved subscription option bits are set");
          sub.no_local = o & 0x04;
          sub.retain_as_published = o & 0x08;
          sub.retain_handling = (o >> 4) & 3;
          if (sub.retain_handling == 3) r.malformed("retain handling 3");
        } else if (o & 0xfc) {
          r.malformed("reserved subscription option bits are set");
        }
        s.subscriptions.push_back(std::move(sub));
      }
      if (s.subscriptions.empty()) r.protocol("no topic filter");
      return s;
    }
    case PacketType::Suback:
    case PacketType::Unsuback: {
      SubAck s;
      s.type = r.type;
      s.packet_id = r.packet_id();
      if (v5) s.properties = r.properties(bit(r.type));
      if (!v5 && r.type == PacketType::Unsuback) {
        r.end();
        return s;
      }
      while (!r.done()) {
        const auto rc = r.u8("reason code");
        const bool valid =
            !v5 ? one_of(rc, {0, 1, 2, 0x80})
            : r.type == PacketType::Suback
                ? one_of(rc, {0, 1, 2, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
                : one_of(rc, {0, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91});
        if (!valid) r.malformed("reason code 0x" + Reader::hex(rc));
        s.reason_codes.push_back(rc);
      }
      if (s.reason_codes.empty()) r.protocol("no reason code");
      return s;
    }
    case PacketType::Unsubscribe: {
      Unsubscribe u;
      u.packet_id = r.packet_id();
      if (v5) u.properties = r.properties(bit(PacketType::Unsubscribe));
      while (!r.done()) u.filters.push_back(r.text("topic filter"));
      if (u.filters.empty()) r.protocol("no topic filter");
      return u;
    }
    case PacketType::Pingreq:
    case PacketType::Pingresp:
      r.end();
      return Ping{r.type};
    case PacketType::Disconnect:
    case PacketType::Auth: {
      Disconnect d;
      d.type = r.type;
      if (v5 && !r.done()) {
        d.reason_code = r.u8("reason code");
        if (!r.done()) d.properties = r.properties(bit(r.type));
        if (r.type == PacketType::Auth && !one_of(d.reason_code, {0x00, 0x18, 0x19}))
          r.malformed("reason code 0x" + Reader::hex(d.reason_code));
      }
      r.end();
      return d;
    }
  }
  r.malformed("unknown packet type");
}

}  // namespace

const char* packet_name(PacketType t) noexcept {
  static const char* names[] = {"reserved packet", "CONNECT", "CONNACK",  "PUBLISH", "PUBACK",  "PUBREC",
                                "PUBREL",          "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK",
                                "PINGREQ",         "PINGRESP", "DISCONNECT", "AUTH"};
  const auto i = static_cast<unsigned>(t);
  return i < 16 ? names[i] : "unknown packet";
}

bool Properties::empty() const noexcept {
  bool any = false;
  visit_properties(*this, [&](std::uint8_t, std::uint32_t, const auto& field) {
    using T = std::decay_t<decltype(field)>;
    if constexpr (std::is_same_v<T, CBin>) any |= field.v.has_value();
    else if constexpr (std::is_same_v<T, UserProperties> || std::is_same_v<T, std::vector<std::uint32_t>>)
      any |= !field.empty();
    else any |= field.has_value();
  });
  return !any;
}

PacketType type_of(const Packet& p) noexcept {
  struct V {
    PacketType operator()(const Connect&) const { return PacketType::Connect; }
    PacketType operator()(const Connack&) const { return PacketType::Connack; }
    PacketType operator()(const Publish&) const { return PacketType::Publish; }
    PacketType operator()(const Ack& a) const { return a.type; }
    PacketType operator()(const Subscribe&) const { return PacketType::Subscribe; }
    PacketType operator()(const SubAck& s) const { return s.type; }
    PacketType operator()(const Unsubscribe&) const { return PacketType::Unsubscribe; }
    PacketType operator()(const Ping& p) const { return p.type; }
    PacketType operator()(const Disconnect& d) const { return d.type; }
  };
  return std::visit(V{}, p);
}

void encode(const Packet& p, Version v, std::string& out) {
  const auto size = out.size();
  try {
    std::visit(Encoder{v, out}, p);
  } catch (...) {
    out.resize(size);
    throw;
  }
}

void encode_publish(Version v, std::string_view topic, std::string_view payload, std::uint8_t qos, bool retain,
                    bool dup, std::uint16_t packet_id, const Properties* properties, std::string& out) {
  check_qos(qos);
  if (dup && qos == 0) bad_argument("DUP is for QoS 1 and 2 only");
  if (const char* problem = topic_name_problem(topic); problem && !topic.empty())
    bad_argument("topic " + printable(topic) + ": " + problem);
  std::string body;
  body.reserve(topic.size() + payload.size() + 16);
  put_publish_body(v, topic, payload, qos, packet_id, properties, body);
  const auto size = out.size();
  try {
    frame(static_cast<std::uint8_t>(0x30 | (dup ? 0x08 : 0) | (qos << 1) | (retain ? 1 : 0)), body, out);
  } catch (...) {
    out.resize(size);
    throw;
  }
}

std::optional<std::size_t> frame_size(std::string_view buf, std::uint32_t max_remaining) {
  if (buf.size() < 2) return std::nullopt;
  std::uint32_t remaining = 0;
  std::size_t i = 1;
  for (;; ++i) {
    if (i > 4)
      throw PacketError(reason::MalformedPacket, "MQTT: malformed packet from the peer: remaining length longer than 4 bytes");
    if (i >= buf.size()) return std::nullopt;
    const auto b = static_cast<std::uint8_t>(buf[i]);
    remaining |= static_cast<std::uint32_t>(b & 0x7f) << (7 * (i - 1));
    if (!(b & 0x80)) {
      if (i > 1 && b == 0)
        throw PacketError(reason::MalformedPacket, "MQTT: malformed packet from the peer: remaining length not in the fewest bytes");
      break;
    }
  }
  if (remaining > max_remaining)
    throw PacketError(reason::PacketTooLarge, "MQTT: the peer sent a packet of " + std::to_string(remaining) +
                                                  " bytes, more than the " + std::to_string(max_remaining) +
                                                  " this client accepts");
  const std::size_t total = i + 1 + remaining;
  if (buf.size() < total) return std::nullopt;
  return total;
}

Packet decode(std::string_view frame, Version v) {
  const auto size = frame_size(frame);
  if (!size || *size != frame.size())
    throw PacketError(reason::MalformedPacket, "MQTT: malformed packet: its length does not match its header");
  const auto first = static_cast<std::uint8_t>(frame[0]);
  const auto type = static_cast<PacketType>(first >> 4);
  const std::uint8_t flags = first & 0x0f;
  std::size_t header = 2;
  while (static_cast<std::uint8_t>(frame[header - 1]) & 0x80) ++header;
  Reader r{frame.substr(header), 0, type};
  if (first >> 4 == 0 || (type == PacketType::Auth && v != Version::V5)) r.malformed("reserved packet type");
  const std::uint8_t expected_flags =
      (type == PacketType::Pubrel || type == PacketType::Subscribe || type == PacketType::Unsubscribe) ? 2 : 0;
  if (type != PacketType::Publish && flags != expected_flags)
    r.malformed("fixed header flags " + std::to_string(flags) + ", expected " + std::to_string(expected_flags));
  return decode_body(r, flags, v);
}

void put_varint(std::uint32_t value, std::string& out) {
  do {
    std::uint8_t b = value & 0x7f;
    value >>= 7;
    if (value) b |= 0x80;
    out.push_back(static_cast<char>(b));
  } while (value);
}

std::size_t varint_size(std::uint32_t value) noexcept {
  return value < 128 ? 1 : value < 16'384 ? 2 : value < 2'097'152 ? 3 : 4;
}

const char* topic_filter_problem(std::string_view filter) {
  if (filter.empty()) return "is empty";
  for (std::size_t i = 0; i < filter.size(); ++i) {
    const bool level_start = i == 0 || filter[i - 1] == '/';
    const bool level_end = i + 1 == filter.size() || filter[i + 1] == '/';
    if (filter[i] == '#' && (!level_start || i + 1 != filter.size()))
      return "has '#' other than as the whole last level";
    if (filter[i] == '+' && (!level_start || !level_end)) return "has '+' other than as a whole level";
  }
  return nullptr;
}

const char* topic_name_problem(std::string_view topic) {
  if (topic.empty()) return "is empty";
  if (topic.find_first_of("+#") != std::string_view::npos) return "has a wildcard ('+' or '#'), which only filters may";
  return nullptr;
}

}  // namespace omnibus::detail::mqtt
