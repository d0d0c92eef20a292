#include "omnibus/codec.hpp"

#include <map>

#include "omnibus/error.hpp"

namespace omnibus {
namespace {

[[noreturn]] void codec_error(const std::string& codec, const std::string& what) {
  throw Error(ErrorCode::Codec, "codec '" + codec + "': " + what);
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
      return Value::parse(p.begin(), p.end());
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
      return Value::from_msgpack(p.begin(), p.end());
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
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    std::uint32_t cp;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else len = 0, cp = 0;
    bool ok = len && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Reject overlong forms, surrogates and code points past U+10FFFF.
    if (ok) {
      static const std::uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= kMin[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    }
    if (!ok)
      throw Error(ErrorCode::Codec, "codec 'text': payload is not valid UTF-8 at byte " + std::to_string(i));
    i += len;
  }
}

}  // namespace omnibus
