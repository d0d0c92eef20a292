#include "omnibus/codec.hpp"

#include <cstddef>
#include <map>
#include <string>
#include <utility>

#include "omnibus/error.hpp"
#include "core/utf8.hpp"

namespace omnibus {
namespace {

[[noreturn]] void codec_error(const std::string& codec, const std::string& what) {
  throw Error(ErrorCode::Codec, "codec '" + codec + "': " + what);
}

// Payloads come from the network. nlohmann-json's MessagePack reader recurses
// once per nesting level, and so do encoding and the bindings' conversion to
// Python, so 100 kB of nested arrays overflowed the stack (msgpack in decode,
// json in encode; found with cpp/fuzz/). Decoding therefore refuses to nest
// deeper than this: more than the 500 levels the bindings accept on encode, so
// whatever omnibus encodes still decodes.
constexpr std::size_t kMaxDepth = 512;

// nlohmann's DOM builder behind a depth count. Its parse_error rethrows the
// library's exception, which the codecs turn into Error(Codec).
class BoundedDomParser {
 public:
  BoundedDomParser(Value& result, std::string codec) : dom_(result), codec_(std::move(codec)) {}
  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(Value::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(Value::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(Value::number_float_t v, const Value::string_t& s) { return dom_.number_float(v, s); }
  bool string(Value::string_t& v) { return dom_.string(v); }
  bool binary(Value::binary_t& v) { return dom_.binary(v); }
  bool key(Value::string_t& v) { return dom_.key(v); }
  bool start_object(std::size_t n) { return enter() && dom_.start_object(n); }
  bool end_object() { --depth_; return dom_.end_object(); }
  bool start_array(std::size_t n) { return enter() && dom_.start_array(n); }
  bool end_array() { --depth_; return dom_.end_array(); }
  template <class Exception>
  bool parse_error(std::size_t position, const std::string& token, const Exception& e) {
    return dom_.parse_error(position, token, e);
  }

 private:
  bool enter() {
    if (++depth_ > kMaxDepth)
      codec_error(codec_, "payload nests deeper than " + std::to_string(kMaxDepth) + " levels");
    return true;
  }

  nlohmann::detail::json_sax_dom_parser<Value> dom_;
  std::string codec_;
  std::size_t depth_ = 0;
};

// Like Value::parse / Value::from_msgpack (strict: trailing bytes are an error).
Value parse_bounded(std::string_view p, Value::input_format_t format, const std::string& codec) {
  Value result;
  BoundedDomParser sax(result, codec);
  Value::sax_parse(p.begin(), p.end(), &sax, format, /*strict=*/true);
  return result;
}

class RawCodec : public Codec {
 public:
  std::string name() const override { return "raw"; }
  std::string encode(const Value& v) const override {
    if (!v.is_binary()) codec_error(name(), std::string("expected bytes, got ") + v.type_name());
    const auto& b = v.get_binary();
    return std::string(b.begin(), b.end());
  }
  Value decode(std::string_view p) const override {
    return Value::binary(std::vector<std::uint8_t>(p.begin(), p.end()));
  }
};

class TextCodec : public Codec {
 public:
  std::string name() const override { return "text"; }
  std::string encode(const Value& v) const override {
    if (!v.is_string()) codec_error(name(), std::string("expected a string, got ") + v.type_name());
    return v.get<std::string>();
  }
  Value decode(std::string_view p) const override {
    check_utf8(p);
    return Value(std::string(p));
  }
};

class JsonCodec : public Codec {
 public:
  std::string name() const override { return "json"; }
  std::string encode(const Value& v) const override {
    try {
      return v.dump();
    } catch (const nlohmann::json::exception& e) {
      codec_error(name(), e.what());
    }
  }
  Value decode(std::string_view p) const override {
    try {
      return parse_bounded(p, Value::input_format_t::json, name());
    } catch (const nlohmann::json::exception& e) {
      codec_error(name(), std::string("payload is not valid JSON: ") + e.what());
    }
  }
};

class MsgpackCodec : public Codec {
 public:
  std::string name() const override { return "msgpack"; }
  std::string encode(const Value& v) const override {
    try {
      std::string out;
      Value::to_msgpack(v, nlohmann::detail::output_adapter<char>(out));
      return out;
    } catch (const nlohmann::json::exception& e) {
      codec_error(name(), e.what());
    }
  }
  Value decode(std::string_view p) const override {
    try {
      return parse_bounded(p, Value::input_format_t::msgpack, name());
    } catch (const nlohmann::json::exception& e) {
      codec_error(name(), std::string("payload is not valid MessagePack: ") + e.what());
    }
  }
};

const std::map<std::string, std::shared_ptr<const Codec>>& builtins() {
  static const auto* table = new std::map<std::string, std::shared_ptr<const Codec>>{
      {"raw", std::make_shared<RawCodec>()},
      {"text", std::make_shared<TextCodec>()},
      {"json", std::make_shared<JsonCodec>()},
      {"msgpack", std::make_shared<MsgpackCodec>()},
  };
  return *table;
}

}  // namespace

std::shared_ptr<const Codec> builtin_codec(const std::string& name) {
  auto it = builtins().find(name);
  if (it == builtins().end()) {
    std::string names;
    for (const auto& [n, _] : builtins()) names += (names.empty() ? "" : ", ") + n;
    throw Error(ErrorCode::InvalidArgument, "unknown codec '" + name + "'; built-in codecs: " + names +
                                                " (or register your own with omnibus.register_codec)");
  }
  return it->second;
}

std::vector<std::string> builtin_codec_names() {
  std::vector<std::string> out;
  for (const auto& [n, _] : builtins()) out.push_back(n);
  return out;
}

void check_utf8(std::string_view s) {
  const auto at = detail::utf8_invalid_at(s);
  if (at != std::string_view::npos)
    throw Error(ErrorCode::Codec, "codec 'text': payload is not valid UTF-8 at byte " + std::to_string(at));
}

}  // namespace omnibus
