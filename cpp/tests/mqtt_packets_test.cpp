// The MQTT packet codec (cpp/src/drivers/mqtt/packets.hpp) without a broker:
// the specifications' own byte examples (MQTT 3.1.1 and 5.0), round trips of
// every packet in both versions, and the decoder's refusals of what no
// conforming peer sends.

#include "drivers/mqtt/packets.hpp"

#include <gtest/gtest.h>

#include <string>

namespace omnibus::detail::mqtt {
namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(static_cast<char>(x));
  return s;
}

std::string encoded(const Packet& p, Version v) {
  std::string out;
  encode(p, v, out);
  return out;
}

Packet round_trip(const Packet& p, Version v) {
  const auto wire = encoded(p, v);
  EXPECT_EQ(frame_size(wire), wire.size());
  return decode(wire, v);
}

// Decoding the bytes of p and encoding the result gives the same bytes: the
// encoder writes every field, so a field the decoder lost or changed shows.
template <class P>
void expect_round_trip(const P& p, Version v) {
  const auto wire = encoded(p, v);
  ASSERT_EQ(frame_size(wire), wire.size());
  const auto back = decode(wire, v);
  ASSERT_TRUE(std::holds_alternative<P>(back));
  EXPECT_EQ(encoded(back, v), wire) << printable(wire);
}

std::uint8_t refusal(std::string_view frame, Version v) {
  try {
    decode(frame, v);
  } catch (const PacketError& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unavailable);
    return e.reason();
  }
  ADD_FAILURE() << "decoded " << printable(frame);
  return 0;
}

TEST(MqttPackets, VariableByteIntegersOfTheSpecTable) {
  // MQTT 5 §1.5.5, table 1-1: the boundaries of each length.
  const std::pair<std::uint32_t, std::string> rows[] = {
      {0, bytes({0x00})},
      {127, bytes({0x7F})},
      {128, bytes({0x80, 0x01})},
      {16'383, bytes({0xFF, 0x7F})},
      {16'384, bytes({0x80, 0x80, 0x01})},
      {2'097'151, bytes({0xFF, 0xFF, 0x7F})},
      {2'097'152, bytes({0x80, 0x80, 0x80, 0x01})},
      {268'435'455, bytes({0xFF, 0xFF, 0xFF, 0x7F})},
  };
  for (const auto& [value, wire] : rows) {
    std::string out;
    put_varint(value, out);
    EXPECT_EQ(out, wire) << value;
    EXPECT_EQ(varint_size(value), wire.size()) << value;
    // As a remaining length: a PINGRESP header says how much follows.
    const std::string header = bytes({0xD0}) + wire;
    if (value == 0) EXPECT_EQ(frame_size(header), 2u);
    else EXPECT_EQ(frame_size(header), std::nullopt) << value;
  }
}

TEST(MqttPackets, RemainingLengthIsNeverTrusted) {
  EXPECT_EQ(frame_size(""), std::nullopt);
  EXPECT_EQ(frame_size(bytes({0x30})), std::nullopt);
  EXPECT_EQ(frame_size(bytes({0x30, 0x80})), std::nullopt);
  EXPECT_EQ(frame_size(bytes({0x30, 0x05, 0, 1, 'a'})), std::nullopt);  // two bytes still to come
  try {
    frame_size(bytes({0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}));
    FAIL();
  } catch (const PacketError& e) {
    EXPECT_EQ(e.reason(), reason::MalformedPacket);
  }
  try {
    frame_size(bytes({0x30, 0x80, 0x00}));  // not the fewest bytes
    FAIL();
  } catch (const PacketError& e) {
    EXPECT_EQ(e.reason(), reason::MalformedPacket);
  }
  // Too large is said from the header alone, before the body arrives.
  try {
    frame_size(bytes({0x30, 0x80, 0x80, 0x05}), 65536);  // 81920
    FAIL();
  } catch (const PacketError& e) {
    EXPECT_EQ(e.reason(), reason::PacketTooLarge);
    EXPECT_NE(std::string(e.what()).find("65536"), std::string::npos);
  }
}

TEST(MqttPackets, Utf8StringOfTheSpecExample) {
  // MQTT 5 §1.5.4, figure 1-1: "A\u{2A6D4}" is 00 05 41 F0 AA 9B 94. As the
  // topic of a QoS 0 PUBLISH with an empty payload (3.1.1: no properties).
  Publish p;
  p.topic = "A\xF0\xAA\x9B\x94";
  const auto wire = encoded(p, Version::V311);
  EXPECT_EQ(wire, bytes({0x30, 0x07, 0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94}));
  EXPECT_EQ(std::get<Publish>(decode(wire, Version::V311)).topic, p.topic);
}

TEST(MqttPackets, ConnectVariableHeaderOfTheSpecExamples) {
  // 3.1.1 §3.1.2.10: protocol name, level 4, flags 0xCE (user name,
  // password, will QoS 1, will, clean session), keep alive 10.
  Connect c;
  c.version = Version::V311;
  c.keep_alive = 10;
  c.will = Will{"w", "bye", 1, false, {}};
  c.username = "u";
  c.password = "p";
  c.client_id = "id";
  const auto wire = encoded(c, Version::V311);
  EXPECT_EQ(wire.substr(2, 10), bytes({0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0xCE, 0x00, 0x0A}));
  EXPECT_EQ(encoded(decode(wire, Version::V311), Version::V311), wire);

  // 5.0 §3.1.2.12: the same header with level 5, then properties of length
  // 5: Session Expiry Interval (0x11) of 10.
  Connect c5;
  c5.keep_alive = 10;
  c5.client_id = "";
  c5.properties.session_expiry_interval = 10;
  c5.clean_start = false;
  const auto wire5 = encoded(c5, Version::V5);
  EXPECT_EQ(wire5.substr(2, 16),
            bytes({0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x00, 0x00, 0x0A, 0x05, 0x11, 0x00, 0x00, 0x00, 0x0A}));
  EXPECT_EQ(encoded(decode(wire5, Version::V5), Version::V5), wire5);
}

TEST(MqttPackets, PublishVariableHeaderOfTheSpecExample) {
  // 5.0 §3.3.2.3: topic "a/b", packet identifier 10, no properties.
  Publish p;
  p.qos = 1;
  p.topic = "a/b";
  p.packet_id = 10;
  p.payload = "x";
  EXPECT_EQ(encoded(p, Version::V5), bytes({0x32, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0A, 0x00, 'x'}));
  EXPECT_EQ(encoded(p, Version::V311), bytes({0x32, 0x08, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0A, 'x'}));
  std::string fast;
  encode_publish(Version::V5, "a/b", "x", 1, false, false, 10, nullptr, fast);
  EXPECT_EQ(fast, encoded(p, Version::V5));
}

TEST(MqttPackets, EveryPacketRoundTripsInBothVersions) {
  for (auto v : {Version::V311, Version::V5}) {
    const bool v5 = v == Version::V5;
    Connect c;
    c.version = v;
    c.client_id = "client";
    c.clean_start = false;
    c.keep_alive = 0;
    c.will = Will{"last/will", std::string("\0\xff", 2), 2, true, {}};
    c.username = "user";
    c.password = std::string("\0pw", 3);
    if (v5) {
      c.properties.receive_maximum = 100;
      c.properties.maximum_packet_size = 1 << 20;
      c.properties.topic_alias_maximum = 10;
      c.properties.user_properties = {{"a", "1"}, {"a", "2"}};
      c.will->properties.will_delay_interval = 5;
      c.will->properties.correlation_data = std::string("\0\1", 2);
    }
    expect_round_trip(c, v);

    Connack ca{true, 0, {}};
    if (v5) {
      ca.properties.assigned_client_identifier = "auto-1";
      ca.properties.receive_maximum = 20;
      ca.properties.maximum_qos = 1;
      ca.properties.server_keep_alive = 30;
    }
    expect_round_trip(ca, v);

    Publish p{true, 2, true, "t/1", 65535, {}, std::string(300, '\0')};
    if (v5) {
      p.properties.user_properties = {{"omnibus-key", "k"}};
      p.properties.subscription_identifiers = {1, 268'435'455};
      p.properties.message_expiry_interval = 60;
      p.properties.payload_format_indicator = 1;
      p.properties.content_type = "text/plain";
      p.properties.response_topic = "r";
    }
    expect_round_trip(p, v);
    const auto back = std::get<Publish>(round_trip(p, v));
    EXPECT_EQ(back.payload, p.payload);
    EXPECT_EQ(back.packet_id, 65535);
    EXPECT_TRUE(back.dup && back.retain && back.qos == 2);
    EXPECT_EQ(back.properties.user_properties, p.properties.user_properties);
    EXPECT_EQ(back.properties.subscription_identifiers, p.properties.subscription_identifiers);

    for (auto t : {PacketType::Puback, PacketType::Pubrec, PacketType::Pubrel, PacketType::Pubcomp}) {
      Ack a{t, 7, 0, {}};
      EXPECT_EQ(encoded(a, v).size(), 4u);  // the short form
      expect_round_trip(a, v);
      if (v5) {
        a.reason_code = t == PacketType::Pubrel || t == PacketType::Pubcomp ? 0x92 : 0x10;
        EXPECT_EQ(encoded(a, v).size(), 5u);
        expect_round_trip(a, v);
        a.properties.reason_string = "why";
        expect_round_trip(a, v);
      }
    }

    Subscribe s{3, {}, {{"a/+/c", 1}, {"$share/g/#", 2}}};
    if (v5) {
      s.subscriptions.push_back({"x", 0, true, true, 2});
      s.properties.subscription_identifiers = {42};
    }
    expect_round_trip(s, v);

    SubAck sa{PacketType::Suback, 3, {}, {1, 2, 0x80}};
    expect_round_trip(sa, v);
    SubAck ua{PacketType::Unsuback, 4, {}, {}};
    if (v5) ua.reason_codes = {0, 0x11};
    expect_round_trip(ua, v);

    Unsubscribe u{4, {}, {"a/+/c", "b"}};
    expect_round_trip(u, v);

    EXPECT_EQ(encoded(Ping{PacketType::Pingreq}, v), bytes({0xC0, 0x00}));
    EXPECT_EQ(std::get<Ping>(round_trip(Ping{PacketType::Pingresp}, v)).type, PacketType::Pingresp);

    EXPECT_EQ(encoded(Disconnect{}, v), bytes({0xE0, 0x00}));
    if (v5) {
      Disconnect d{PacketType::Disconnect, 0x04, {}};
      d.properties.session_expiry_interval = 0;
      expect_round_trip(d, v);
      Disconnect auth{PacketType::Auth, 0x18, {}};
      auth.properties.authentication_method = "SCRAM";
      expect_round_trip(auth, v);
    }
  }
}

TEST(MqttPackets, EncoderRefusesWhatMqttCannotCarry) {
  auto refused = [](const Packet& p, Version v, ErrorCode code = ErrorCode::InvalidArgument) {
    std::string out = "kept";
    try {
      encode(p, v, out);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_EQ(out, "kept");
      return std::string(e.what());
    }
    ADD_FAILURE() << "encoded";
    return std::string();
  };
  EXPECT_NE(refused(Publish{false, 0, false, std::string("a\0b", 3)}, Version::V5).find("U+0000"), std::string::npos);
  EXPECT_NE(refused(Publish{false, 0, false, "a/+"}, Version::V5).find("wildcard"), std::string::npos);
  refused(Publish{false, 0, false, ""}, Version::V5);
  refused(Publish{false, 3, false, "t"}, Version::V5);
  refused(Publish{false, 1, false, "t", 0}, Version::V5);  // QoS 1 without an id
  refused(Publish{true, 0, false, "t"}, Version::V5);
  refused(Publish{false, 0, false, std::string(65536, 'a')}, Version::V5);
  Publish with_props{false, 0, false, "t"};
  with_props.properties.content_type = "x";
  EXPECT_NE(refused(with_props, Version::V311).find("MQTT 5"), std::string::npos);
  with_props.properties = {};
  with_props.properties.receive_maximum = 1;  // a CONNECT property
  EXPECT_NE(refused(with_props, Version::V5).find("PUBLISH"), std::string::npos);
  refused(Subscribe{1, {}, {{"a/#/b", 0}}}, Version::V5);
  refused(Subscribe{1, {}, {}}, Version::V5);
  refused(Subscribe{1, {}, {{"a", 0, true}}}, Version::V311);
  Connect c;
  c.version = Version::V311;
  c.password = "p";
  refused(c, Version::V311);
}

TEST(MqttPackets, DecoderRefusesWhatNoConformingPeerSends) {
  const auto v5 = Version::V5;
  const auto v3 = Version::V311;
  // Reserved packet types and fixed header flags.
  EXPECT_EQ(refusal(bytes({0x00, 0x00}), v5), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0xF0, 0x00}), v3), reason::MalformedPacket);  // AUTH in 3.1.1
  EXPECT_EQ(std::get<Ack>(decode(bytes({0x62, 0x02, 0x00, 0x01}), v5)).type, PacketType::Pubrel);
}

TEST(MqttPackets, DecoderRefusals) {
  const auto v5 = Version::V5;
  const auto v3 = Version::V311;
  EXPECT_EQ(refusal(bytes({0x60, 0x02, 0x00, 0x01}), v5), reason::MalformedPacket);  // PUBREL flags 0
  EXPECT_EQ(refusal(bytes({0xC1, 0x00}), v5), reason::MalformedPacket);              // PINGREQ flags
  EXPECT_EQ(refusal(bytes({0xD0, 0x01, 0x00}), v5), reason::MalformedPacket);        // PINGRESP body
  // PUBLISH: QoS 3, DUP at QoS 0, wildcard topic, a string longer than the packet.
  EXPECT_EQ(refusal(bytes({0x36, 0x03, 0x00, 0x01, 't'}), v3), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x38, 0x03, 0x00, 0x01, 't'}), v3), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x30, 0x03, 0x00, 0x01, '#'}), v3), reason::ProtocolError);
  EXPECT_EQ(refusal(bytes({0x30, 0x03, 0x00, 0x09, 't'}), v3), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x32, 0x05, 0x00, 0x01, 't', 0x00, 0x00}), v3), reason::MalformedPacket);  // id 0
  // Strings: U+0000, a surrogate, a cut sequence.
  EXPECT_EQ(refusal(bytes({0x30, 0x03, 0x00, 0x01, 0x00}), v3), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80}), v3), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x30, 0x03, 0x00, 0x01, 0xC3}), v3), reason::MalformedPacket);
  // Properties: length past the packet, unknown id, misplaced, twice, bad value.
  EXPECT_EQ(refusal(bytes({0x30, 0x04, 0x00, 0x01, 't', 0x05}), v5), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x30, 0x05, 0x00, 0x01, 't', 0x01, 0x7F}), v5), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x30, 0x07, 0x00, 0x01, 't', 0x03, 0x21, 0x00, 0x01}), v5), reason::ProtocolError);
  EXPECT_EQ(refusal(bytes({0x30, 0x08, 0x00, 0x01, 't', 0x04, 0x01, 0x00, 0x01, 0x00}), v5), reason::ProtocolError);
  EXPECT_EQ(refusal(bytes({0x30, 0x06, 0x00, 0x01, 't', 0x02, 0x01, 0x02}), v5), reason::ProtocolError);
  EXPECT_EQ(refusal(bytes({0x30, 0x07, 0x00, 0x01, 't', 0x03, 0x23, 0x00, 0x00}), v5), reason::ProtocolError);
  EXPECT_EQ(refusal(bytes({0x30, 0x06, 0x00, 0x01, 't', 0x02, 0x02, 0x00}), v5), reason::MalformedPacket);
  // Empty topic without an alias; with one it decodes.
  EXPECT_EQ(refusal(bytes({0x30, 0x03, 0x00, 0x00, 0x00}), v5), reason::ProtocolError);
  EXPECT_EQ(std::get<Publish>(decode(bytes({0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01}), v5)).properties.topic_alias, 1);
  // CONNACK: reserved flags, 3.1.1 return code 6, session present with a failure.
  EXPECT_EQ(refusal(bytes({0x20, 0x02, 0x02, 0x00}), v3), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x20, 0x02, 0x00, 0x06}), v3), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x20, 0x02, 0x01, 0x05}), v3), reason::ProtocolError);
  EXPECT_EQ(refusal(bytes({0x20, 0x03, 0x00, 0x00}), v5), reason::MalformedPacket);  // cut
  // 3.1.1 acks are exactly two bytes; MQTT 5 reason codes are checked.
  EXPECT_EQ(refusal(bytes({0x40, 0x03, 0x00, 0x01, 0x00}), v3), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x40, 0x03, 0x00, 0x01, 0x05}), v5), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x90, 0x03, 0x00, 0x01, 0x03}), v3), reason::MalformedPacket);  // SUBACK rc 3
  EXPECT_EQ(refusal(bytes({0x90, 0x02, 0x00, 0x01}), v3), reason::ProtocolError);          // no rc
  EXPECT_EQ(refusal(bytes({0xB0, 0x03, 0x00, 0x01, 0x00}), v3), reason::MalformedPacket);  // 3.1.1 UNSUBACK body
  // SUBSCRIBE: reserved option bits, bad filter.
  EXPECT_EQ(refusal(bytes({0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x04}), v3), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0xC0}), v5), reason::MalformedPacket);
  EXPECT_EQ(refusal(bytes({0x82, 0x07, 0x00, 0x01, 0x00, 0x02, 'a', '#', 0x00}), v3), reason::ProtocolError);
  // A frame whose header disagrees with its size.
  EXPECT_EQ(refusal(bytes({0xC0, 0x00, 0x00}), v3), reason::MalformedPacket);
}

TEST(MqttPackets, TopicFiltersOfTheSpecExamples) {
  // MQTT 5 §4.7.1.2 and §4.7.1.3.
  for (const char* ok : {"sport/tennis/player1/#", "sport/#", "#", "+", "+/tennis/#", "sport/+/player1", "/+", "+/+",
                         "$share/g/a/#"})
    EXPECT_EQ(topic_filter_problem(ok), nullptr) << ok;
  for (const char* bad : {"sport/tennis#", "sport/tennis/#/ranking", "sport+", ""})
    EXPECT_NE(topic_filter_problem(bad), nullptr) << bad;
  EXPECT_EQ(topic_name_problem("sport/tennis"), nullptr);
  EXPECT_NE(topic_name_problem("sport/+"), nullptr);
}

TEST(MqttPackets, ManyPacketsInOneBufferAreFramedOneByOne) {
  std::string wire;
  for (std::uint16_t id = 1; id <= 50; ++id)
    encode_publish(Version::V5, "t", std::string(id, 'p'), 1, false, false, id, nullptr, wire);
  std::string_view rest = wire;
  std::uint16_t id = 0;
  while (auto n = frame_size(rest)) {
    auto p = std::get<Publish>(decode(rest.substr(0, *n), Version::V5));
    EXPECT_EQ(p.packet_id, ++id);
    EXPECT_EQ(p.payload.size(), id);
    rest.remove_prefix(*n);
  }
  EXPECT_EQ(id, 50);
  EXPECT_TRUE(rest.empty());
}

}  // namespace
}  // namespace omnibus::detail::mqtt
