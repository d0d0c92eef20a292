// The MQTT packet decoder (cpp/src/drivers/mqtt/packets.hpp) on arbitrary
// bytes, as a connection would read them. Input: one byte choosing the
// protocol (bit 0: MQTT 5, else 3.1.1) and the size limit (bit 1: 64 bytes,
// else the MQTT maximum), then the byte stream. Properties: framing and
// decoding say no only with PacketError (ErrorCode::Unavailable) and a reason
// code of malformed packet, protocol error or packet too large; a frame is
// never larger than the stream nor the limit; whatever decodes and encodes
// again decodes to a packet that encodes to the same bytes (a fixed point).

#include <cstddef>
#include <cstdint>

#include "drivers/mqtt/packets.hpp"
#include "fuzz_util.hpp"

namespace {

using namespace omnibus;
using namespace omnibus::detail::mqtt;

template <class Fn>
bool peer_accepts(Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const PacketError& e) {
    fuzz::check(e.code() == ErrorCode::Unavailable, std::string("PacketError with another code: ") + e.what());
    fuzz::check(e.reason() == reason::MalformedPacket || e.reason() == reason::ProtocolError ||
                    e.reason() == reason::PacketTooLarge,
                "unexpected reason code for: " + std::string(e.what()));
    return false;
  } catch (const std::exception& e) {
    fuzz::fail(std::string("decoding threw something other than PacketError: ") + e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const Version v = (data[0] & 1) ? Version::V5 : Version::V311;
  const std::uint32_t limit = (data[0] & 2) ? 64 : kMaxVarInt;
  std::string_view stream = fuzz::as_text(data + 1, size - 1);
  while (!stream.empty()) {
    std::optional<std::size_t> n;
    if (!peer_accepts([&] { n = frame_size(stream, limit); }) || !n) break;
    fuzz::check(*n >= 2 && *n <= stream.size() && *n <= limit + 5u, "frame size out of bounds");
    Packet p;
    if (peer_accepts([&] { p = decode(stream.substr(0, *n), v); })) {
      std::string once;
      // The decoder accepts a little the encoder refuses to send (control
      // characters in strings, which receivers must take): InvalidArgument.
      if (fuzz::accepts(ErrorCode::InvalidArgument, [&] { encode(p, v, once); })) {
        fuzz::check(frame_size(once) == once.size(), "an encoded packet does not frame as itself");
        Packet again;
        fuzz::check(peer_accepts([&] { again = decode(once, v); }), "an encoded packet does not decode");
        std::string twice;
        encode(again, v, twice);
        fuzz::check(twice == once, "decode/encode is not a fixed point: " + fuzz::shown(once) + " then " +
                                       fuzz::shown(twice));
      }
    }
    stream.remove_prefix(*n);
  }
  return 0;
}
