#pragma once
// Codecs turn values into payload bytes and back. Values are JSON-like trees
// (nlohmann::json, which also carries binary for MessagePack's bin type).
// Built in: raw (bytes), text (UTF-8), json, msgpack. Python code registers
// more through the bindings.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace omnibus {

using Value = nlohmann::json;

class Codec {
 public:
  virtual ~Codec() = default;
  virtual std::string name() const = 0;
  // Both throw Error(Codec) naming what was wrong. Thread-safe.
  virtual std::string encode(const Value& value) const = 0;
  virtual Value decode(std::string_view payload) const = 0;
};

// Built-in codecs by name; throws InvalidArgument naming the valid ones.
std::shared_ptr<const Codec> builtin_codec(const std::string& name);
std::vector<std::string> builtin_codec_names();

// Throws Error(Codec) when `s` is not valid UTF-8, naming the byte offset.
void check_utf8(std::string_view s);

}  // namespace omnibus
