#include "core/utf8.hpp"

#include <gtest/gtest.h>

#include <string>

namespace omnibus::detail {
namespace {

TEST(Utf8, DecodesEachLengthAtItsBounds) {
  struct Case {
    std::string bytes;
    char32_t cp;
  };
  for (const auto& [bytes, cp] : {Case{"\x7f", 0x7f}, Case{"\xc2\x80", 0x80}, Case{"\xdf\xbf", 0x7ff},
                                  Case{"\xe0\xa0\x80", 0x800}, Case{"\xed\x9f\xbf", 0xd7ff},
                                  Case{"\xee\x80\x80", 0xe000}, Case{"\xef\xbf\xbf", 0xffff},
                                  Case{"\xf0\x90\x80\x80", 0x10000}, Case{"\xf4\x8f\xbf\xbf", 0x10ffff}}) {
    const auto step = utf8_step(bytes, 0);
    EXPECT_EQ(step.fault, Utf8Fault::None) << bytes;
    EXPECT_EQ(step.length, bytes.size()) << bytes;
    EXPECT_EQ(step.code_point, cp) << bytes;
  }
  EXPECT_EQ(utf8_step(std::string("\0", 1), 0).length, 1u);  // U+0000 is well-formed; protocols forbid it
}

TEST(Utf8, NamesEachFault) {
  EXPECT_EQ(utf8_step("\x80", 0).fault, Utf8Fault::Malformed);          // a continuation byte first
  EXPECT_EQ(utf8_step("\xff", 0).fault, Utf8Fault::Malformed);          // never a lead byte
  EXPECT_EQ(utf8_step("\xe2\x82", 0).fault, Utf8Fault::Malformed);      // cut off
  EXPECT_EQ(utf8_step("\xe2\x28\xa1", 0).fault, Utf8Fault::Malformed);  // bad continuation
  EXPECT_EQ(utf8_step("\xc0\xaf", 0).fault, Utf8Fault::Overlong);
  EXPECT_EQ(utf8_step("\xe0\x80\xaf", 0).fault, Utf8Fault::Overlong);
  EXPECT_EQ(utf8_step("\xf0\x8f\xbf\xbf", 0).fault, Utf8Fault::Overlong);
  EXPECT_EQ(utf8_step("\xed\xa0\x80", 0).fault, Utf8Fault::Surrogate);
  EXPECT_EQ(utf8_step("\xed\xbf\xbf", 0).fault, Utf8Fault::Surrogate);
  EXPECT_EQ(utf8_step("\xf4\x90\x80\x80", 0).fault, Utf8Fault::TooLarge);
  EXPECT_EQ(utf8_step("\xf7\xbf\xbf\xbf", 0).fault, Utf8Fault::TooLarge);
}

TEST(Utf8, InvalidAtIsTheFirstBadSequence) {
  EXPECT_EQ(utf8_invalid_at(""), std::string_view::npos);
  EXPECT_EQ(utf8_invalid_at("h\xc3\xa9llo \xf0\x9f\x98\x80"), std::string_view::npos);
  EXPECT_EQ(utf8_invalid_at("ok\xed\xa0\x80"), 2u);
  EXPECT_EQ(utf8_invalid_at("\xc3\xa9\xc3"), 2u);
}

}  // namespace
}  // namespace omnibus::detail
