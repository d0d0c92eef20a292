#pragma once
// MQTT control packets, 3.1.1 (OASIS 2014) and 5.0 (OASIS 2019): plain structs,
// an encoder that appends a packet's bytes to a buffer, and a decoder that
// takes bytes read from the network. Written from the specifications; the
// section numbers below are those of MQTT 5.0 unless 3.1.1 is named.
//
// The decoder trusts no length: every length prefix, variable byte integer and
// property is checked against the bytes that are really there, a packet's
// remaining length against the limit the caller gives, and every string
// against MQTT's UTF-8 rules (§1.5.4: well-formed, no U+0000, no surrogates;
// control characters are allowed on receipt, the spec only advises against
// them). Properties are checked against the packet they appear in (§2.2.2.2)
// and must not repeat, except User Property and, in PUBLISH, Subscription
// Identifier. A 3.1.1 packet never carries properties nor reason codes where
// 3.1.1 has none.
//
// Errors: decoding throws PacketError (ErrorCode::Unavailable: the peer sent
// something no conforming peer sends, the connection has to go), carrying
// the MQTT 5 reason code to close it with. Encoding throws
// Error(InvalidArgument) for what MQTT cannot carry (a string that is not MQTT
// UTF-8 or longer than 65535 bytes, a QoS above 2, a property 3.1.1 lacks...)
// and Error(ResourceExhausted) for a packet larger than MQTT's 256 MiB limit.
// Nothing else but std::bad_alloc. Thread-safe (no state), never blocks.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "drivers/mqtt/envelope.hpp"
#include "omnibus/error.hpp"

namespace omnibus::detail::mqtt {

// The protocol level byte of CONNECT (§3.1.2.2).
enum class Version : std::uint8_t { V311 = 4, V5 = 5 };

enum class PacketType : std::uint8_t {
  Connect = 1,
  Connack = 2,
  Publish = 3,
  Puback = 4,
  Pubrec = 5,
  Pubrel = 6,
  Pubcomp = 7,
  Subscribe = 8,
  Suback = 9,
  Unsubscribe = 10,
  Unsuback = 11,
  Pingreq = 12,
  Pingresp = 13,
  Disconnect = 14,
  Auth = 15,
};

const char* packet_name(PacketType t) noexcept;

// The largest remaining length a variable byte integer can say (§1.5.5).
inline constexpr std::uint32_t kMaxVarInt = 268'435'455;

// MQTT 5 reason codes the codec and the session use (§2.4).
namespace reason {
inline constexpr std::uint8_t Success = 0x00;
inline constexpr std::uint8_t NoMatchingSubscribers = 0x10;
inline constexpr std::uint8_t UnspecifiedError = 0x80;
inline constexpr std::uint8_t MalformedPacket = 0x81;
inline constexpr std::uint8_t ProtocolError = 0x82;
inline constexpr std::uint8_t PacketIdentifierNotFound = 0x92;
inline constexpr std::uint8_t ReceiveMaximumExceeded = 0x93;
inline constexpr std::uint8_t PacketTooLarge = 0x95;
inline constexpr std::uint8_t KeepAliveTimeout = 0x8D;
}  // namespace reason

// A packet the peer should not have sent. `reason()` is the MQTT 5 reason code
// of the DISCONNECT that closes the connection for it.
class PacketError : public Error {
 public:
  PacketError(std::uint8_t reason, const std::string& message)
      : Error(ErrorCode::Unavailable, message), reason_(reason) {}
  std::uint8_t reason() const noexcept { return reason_; }

 private:
  std::uint8_t reason_;
};

// MQTT 5 properties (§2.2.2). A field is present when the packet carried it.
// Binary Data properties (correlation and authentication data) are bytes in a
// std::string.
struct Properties {
  std::optional<std::uint8_t> payload_format_indicator;          // 0x01
  std::optional<std::uint32_t> message_expiry_interval;          // 0x02
  std::optional<std::string> content_type;                       // 0x03
  std::optional<std::string> response_topic;                     // 0x08
  std::optional<std::string> correlation_data;                   // 0x09
  std::vector<std::uint32_t> subscription_identifiers;           // 0x0B
  std::optional<std::uint32_t> session_expiry_interval;          // 0x11
  std::optional<std::string> assigned_client_identifier;         // 0x12
  std::optional<std::uint16_t> server_keep_alive;                // 0x13
  std::optional<std::string> authentication_method;              // 0x15
  std::optional<std::string> authentication_data;                // 0x16
  std::optional<std::uint8_t> request_problem_information;       // 0x17
  std::optional<std::uint32_t> will_delay_interval;              // 0x18
  std::optional<std::uint8_t> request_response_information;      // 0x19
  std::optional<std::string> response_information;               // 0x1A
  std::optional<std::string> server_reference;                   // 0x1C
  std::optional<std::string> reason_string;                      // 0x1F
  std::optional<std::uint16_t> receive_maximum;                  // 0x21
  std::optional<std::uint16_t> topic_alias_maximum;              // 0x22
  std::optional<std::uint16_t> topic_alias;                      // 0x23
  std::optional<std::uint8_t> maximum_qos;                       // 0x24
  std::optional<std::uint8_t> retain_available;                  // 0x25
  UserProperties user_properties;                                // 0x26
  std::optional<std::uint32_t> maximum_packet_size;              // 0x27
  std::optional<std::uint8_t> wildcard_subscription_available;   // 0x28
  std::optional<std::uint8_t> subscription_identifier_available; // 0x29
  std::optional<std::uint8_t> shared_subscription_available;     // 0x2A

  bool empty() const noexcept;
};

struct Will {
  std::string topic;
  std::string payload;
  std::uint8_t qos = 0;
  bool retain = false;
  Properties properties;  // MQTT 5 will properties
};

struct Connect {
  Version version = Version::V5;
  bool clean_start = true;  // 3.1.1: Clean Session
  std::uint16_t keep_alive = 60;
  Properties properties;
  std::string client_id;
  std::optional<Will> will;
  std::optional<std::string> username;
  std::optional<std::string> password;  // binary
};

struct Connack {
  bool session_present = false;
  std::uint8_t reason_code = 0;  // 3.1.1: the return code (0..5)
  Properties properties;
};

struct Publish {
  bool dup = false;
  std::uint8_t qos = 0;
  bool retain = false;
  std::string topic;  // may be empty in MQTT 5 when a Topic Alias names it
  std::uint16_t packet_id = 0;  // QoS 1 and 2 only
  Properties properties;
  std::string payload;
};

// PUBACK, PUBREC, PUBREL, PUBCOMP: the same shape (§3.4-3.7).
struct Ack {
  PacketType type = PacketType::Puback;
  std::uint16_t packet_id = 0;
  std::uint8_t reason_code = 0;  // MQTT 5 only; 3.1.1 always 0
  Properties properties;
};

struct Subscription {
  std::string filter;
  std::uint8_t qos = 0;
  bool no_local = false;             // MQTT 5
  bool retain_as_published = false;  // MQTT 5
  std::uint8_t retain_handling = 0;  // MQTT 5, 0..2
};

struct Subscribe {
  std::uint16_t packet_id = 0;
  Properties properties;
  std::vector<Subscription> subscriptions;  // at least one
};

// SUBACK and UNSUBACK (3.1.1's UNSUBACK has no reason codes).
struct SubAck {
  PacketType type = PacketType::Suback;
  std::uint16_t packet_id = 0;
  Properties properties;
  std::vector<std::uint8_t> reason_codes;
};

struct Unsubscribe {
  std::uint16_t packet_id = 0;
  Properties properties;
  std::vector<std::string> filters;  // at least one
};

// PINGREQ, PINGRESP: a fixed header only.
struct Ping {
  PacketType type = PacketType::Pingreq;
};

// DISCONNECT (3.1.1: no body) and AUTH (MQTT 5 only).
struct Disconnect {
  PacketType type = PacketType::Disconnect;
  std::uint8_t reason_code = 0;
  Properties properties;
};

using Packet = std::variant<Connect, Connack, Publish, Ack, Subscribe, SubAck, Unsubscribe, Ping, Disconnect>;

PacketType type_of(const Packet& p) noexcept;

// Appends the bytes of `p` for protocol `v` to `out`. When p is a Connect its
// own version counts. Throws as the file comment says; `out` is unchanged then.
void encode(const Packet& p, Version v, std::string& out);

// Appends a PUBLISH without building a Publish first (the hot path of the
// publisher): the same bytes as encode(Publish{...}).
void encode_publish(Version v, std::string_view topic, std::string_view payload, std::uint8_t qos,
                    bool retain, bool dup, std::uint16_t packet_id, const Properties* properties,
                    std::string& out);

// The size of the first packet in `buf` when all of it has arrived, nullopt
// when more bytes are needed. Throws PacketError for a malformed remaining
// length, and for a packet whose remaining length exceeds `max_remaining`
// (PacketTooLarge) as soon as its header says so, before it arrives.
std::optional<std::size_t> frame_size(std::string_view buf, std::uint32_t max_remaining = kMaxVarInt);

// Decodes one whole packet (`frame`, as sized by frame_size) of protocol `v`.
// Throws PacketError when it is not a packet a conforming peer of `v` sends.
Packet decode(std::string_view frame, Version v);

// Variable byte integers (§1.5.5), exposed for tests and the fuzzer.
void put_varint(std::uint32_t value, std::string& out);  // value <= kMaxVarInt
std::size_t varint_size(std::uint32_t value) noexcept;

// Why `filter` is not a valid topic filter (§4.7: '#' last and alone in its
// level, '+' alone in its level, not empty), or nullptr. And a topic name
// (no wildcards, not empty).
const char* topic_filter_problem(std::string_view filter);
const char* topic_name_problem(std::string_view topic);

}  // namespace omnibus::detail::mqtt
