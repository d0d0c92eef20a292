#include "omnibus/codec.hpp"

#include <gtest/gtest.h>

#include "omnibus/error.hpp"
#include "test_util.hpp"

namespace omnibus {
namespace {

using test::error_of;
using test::has_substr;

Value bytes(const std::string& s) { return Value::binary(std::vector<std::uint8_t>(s.begin(), s.end())); }

TEST(Codec, BuiltinNamesAreSorted) {
  EXPECT_EQ(builtin_codec_names(), (std::vector<std::string>{"json", "msgpack", "raw", "text"}));
  for (const auto& n : builtin_codec_names()) EXPECT_EQ(builtin_codec(n)->name(), n);
}

TEST(Codec, UnknownNameListsTheBuiltins) {
  auto e = error_of([] { builtin_codec("protobuf"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "unknown codec 'protobuf'"));
  EXPECT_TRUE(has_substr(e->what(), "json, msgpack, raw, text"));
}

TEST(Codec, RawPassesBytesThroughIncludingNul) {
  auto raw = builtin_codec("raw");
  const std::string payload("a\0b\xff", 4);
  EXPECT_EQ(raw->encode(bytes(payload)), payload);
  auto v = raw->decode(payload);
  ASSERT_TRUE(v.is_binary());
  EXPECT_EQ(v, bytes(payload));
  EXPECT_EQ(raw->encode(raw->decode("")), "");
}

TEST(Codec, RawRejectsNonBytes) {
  auto e = error_of([] { builtin_codec("raw")->encode(Value("text")); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Codec);
  EXPECT_TRUE(has_substr(e->what(), "codec 'raw': expected bytes, got string"));
}

TEST(Codec, TextRoundTripsUtf8) {
  auto text = builtin_codec("text");
  const std::string s = "gr\xc3\xbc\xc3\x9f dich \xe2\x82\xac \xf0\x9f\x98\x80";
  EXPECT_EQ(text->encode(Value(s)), s);
  EXPECT_EQ(text->decode(s), Value(s));
}

TEST(Codec, TextRejectsNonStringsAndInvalidUtf8) {
  auto text = builtin_codec("text");
  auto e = error_of([&] { text->encode(Value(42)); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Codec);
  EXPECT_TRUE(has_substr(e->what(), "codec 'text': expected a string, got number"));

  e = error_of([&] { text->decode("ok\xff"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Codec);
  EXPECT_TRUE(has_substr(e->what(), "not valid UTF-8 at byte 2"));
}

TEST(Codec, JsonRoundTrip) {
  auto json = builtin_codec("json");
  Value v = {{"id", 7}, {"tags", {"a", "b"}}, {"nested", {{"ok", true}, {"none", nullptr}}}, {"pi", 3.5}};
  auto payload = json->encode(v);
  EXPECT_EQ(json->decode(payload), v);
  EXPECT_EQ(json->encode(Value("x")), "\"x\"");
}

TEST(Codec, JsonDecodeErrorIsCodecError) {
  auto json = builtin_codec("json");
  for (const char* bad : {"{\"a\":", "", "[1,]", "{} trailing"}) {
    auto e = error_of([&] { json->decode(bad); });
    ASSERT_TRUE(e) << bad;
    EXPECT_EQ(e->code(), ErrorCode::Codec) << bad;
    EXPECT_TRUE(has_substr(e->what(), "codec 'json': payload is not valid JSON")) << bad;
  }
}

TEST(Codec, JsonEncodeOfInvalidUtf8StringIsCodecError) {
  auto e = error_of([] { builtin_codec("json")->encode(Value(std::string("\xc3\x28"))); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Codec);
  EXPECT_TRUE(has_substr(e->what(), "codec 'json'"));
}

TEST(Codec, MsgpackRoundTripKeepsBinary) {
  auto mp = builtin_codec("msgpack");
  Value v = {{"blob", bytes(std::string("\x00\x01\xfe", 3))}, {"n", -5}, {"list", {1, 2.5, "s"}}};
  auto payload = mp->encode(v);
  auto back = mp->decode(payload);
  EXPECT_EQ(back, v);
  EXPECT_TRUE(back["blob"].is_binary());
}

TEST(Codec, MsgpackIsCompact) {
  // A positive fixint is one byte in MessagePack.
  EXPECT_EQ(builtin_codec("msgpack")->encode(Value(5)), std::string("\x05"));
}

TEST(Codec, MsgpackDecodeErrorIsCodecError) {
  auto mp = builtin_codec("msgpack");
  // A map header announcing one pair, then nothing; a reserved type byte; nothing.
  for (const char* bad : {"\x81", "\xc1", ""}) {
    auto e = error_of([&] { mp->decode(bad); });
    ASSERT_TRUE(e);
    EXPECT_EQ(e->code(), ErrorCode::Codec);
    EXPECT_TRUE(has_substr(e->what(), "codec 'msgpack': payload is not valid MessagePack"));
  }
}

// Found by cpp/fuzz/: 100 kB of nested arrays overflowed the stack, in decode
// for msgpack (a recursive reader) and in encode for json. Decoding now stops
// at 512 levels with a CodecError, and what it accepts encodes again.
TEST(Codec, DeepNestingIsCodecErrorNotStackOverflow) {
  auto nested_json = [](std::size_t n) { return std::string(n, '[') + std::string(n, ']'); };
  auto nested_msgpack = [](std::size_t n) { return std::string(n, '\x91') + '\xc0'; };
  for (const char* name : {"json", "msgpack"}) {
    auto codec = builtin_codec(name);
    auto nested = std::string(name) == "json" ? +nested_json : +nested_msgpack;
    auto deepest = codec->decode(nested(512));
    EXPECT_EQ(codec->encode(deepest), nested(512)) << name;
    for (std::size_t n : {513, 100000}) {
      auto e = error_of([&] { codec->decode(nested(n)); });
      ASSERT_TRUE(e) << name << " " << n;
      EXPECT_EQ(e->code(), ErrorCode::Codec);
      EXPECT_TRUE(has_substr(e->what(), "nests deeper than 512 levels")) << e->what();
    }
  }
  // Objects count as levels too.
  std::string objects;
  for (int i = 0; i < 600; ++i) objects += "{\"a\":";
  objects += "1" + std::string(600, '}');
  auto e = error_of([&] { builtin_codec("json")->decode(objects); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Codec);
}

TEST(Utf8, AcceptsValidText) {
  EXPECT_NO_THROW(check_utf8(""));
  EXPECT_NO_THROW(check_utf8("plain ascii"));
  EXPECT_NO_THROW(check_utf8(std::string("nul\0inside", 10)));
  EXPECT_NO_THROW(check_utf8("\xc2\x80"));          // U+0080, smallest 2-byte
  EXPECT_NO_THROW(check_utf8("\xe0\xa0\x80"));      // U+0800, smallest 3-byte
  EXPECT_NO_THROW(check_utf8("\xed\x9f\xbf"));      // U+D7FF, just below the surrogates
  EXPECT_NO_THROW(check_utf8("\xee\x80\x80"));      // U+E000, just above them
  EXPECT_NO_THROW(check_utf8("\xf4\x8f\xbf\xbf"));  // U+10FFFF, the last code point
}

struct BadUtf8 {
  std::string bytes;
  std::size_t offset;
  const char* what;
};

void PrintTo(const BadUtf8& p, std::ostream* os) { *os << p.what; }

class InvalidUtf8 : public ::testing::TestWithParam<BadUtf8> {};

TEST_P(InvalidUtf8, IsCodecErrorNamingTheByteOffset) {
  const auto& p = GetParam();
  auto e = error_of([&] { check_utf8(p.bytes); });
  ASSERT_TRUE(e) << p.what << " was accepted";
  EXPECT_EQ(e->code(), ErrorCode::Codec);
  EXPECT_EQ(std::string(e->what()), "codec 'text': payload is not valid UTF-8 at byte " + std::to_string(p.offset))
      << p.what;
}

INSTANTIATE_TEST_SUITE_P(Utf8, InvalidUtf8,
                         ::testing::Values(BadUtf8{"ab\x80", 2, "lone continuation byte"},
                                           BadUtf8{"\xc3", 0, "truncated 2-byte sequence"},
                                           BadUtf8{"x\xe2\x82", 1, "truncated 3-byte sequence"},
                                           BadUtf8{"\xc3\x28", 0, "bad continuation byte"},
                                           BadUtf8{"\xc0\xaf", 0, "overlong '/'"},
                                           BadUtf8{"\xe0\x80\xaf", 0, "overlong 3-byte"},
                                           BadUtf8{"\xf0\x80\x80\xaf", 0, "overlong 4-byte"},
                                           BadUtf8{"ok\xed\xa0\x80", 2, "UTF-16 surrogate"},
                                           BadUtf8{"\xf4\x90\x80\x80", 0, "past U+10FFFF"},
                                           BadUtf8{"\xf8\x88\x80\x80\x80", 0, "5-byte form"},
                                           BadUtf8{"\xff", 0, "0xFF"},
                                           BadUtf8{"\xe2\x82\xac\xe2\x82", 3, "truncated after a valid one"}));

TEST(Codec, CodecsAreUsableFromSeveralThreads) {
  auto json = builtin_codec("json");
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        Value v = {{"t", t}, {"i", i}};
        if (json->decode(json->encode(v)) == v) ok++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 2000);
}

}  // namespace
}  // namespace omnibus
