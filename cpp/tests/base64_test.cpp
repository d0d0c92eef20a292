#include "core/base64.hpp"

#include <gtest/gtest.h>

#include <string>

namespace omnibus {
namespace {

TEST(Base64, RoundTripsEveryTailLength) {
  const std::string bytes("\x00\xff\x10 key\x80", 8);
  for (std::size_t n = 0; n <= bytes.size(); ++n) {
    auto part = bytes.substr(0, n);
    EXPECT_EQ(b64_decode(b64_encode(part)), part) << n;
  }
  EXPECT_EQ(b64_encode("hello world"), "aGVsbG8gd29ybGQ=");
  EXPECT_EQ(b64_decode("YQ=="), "a");
}

TEST(Base64, RejectsMalformedInput) {
  for (const char* bad : {"YWJjZA", "Y===", "=QQQ", "YQ==YQ==", "YW*j", "YQ=A"})
    EXPECT_FALSE(b64_decode(bad)) << bad;
}

// Found by cpp/fuzz/base64_fuzz.cpp: pad bits were ignored, so "QR==" and
// "QQ==" both decoded to "A" and a decoded key did not encode back the same.
TEST(Base64, RejectsNonZeroPadBits) {
  EXPECT_EQ(b64_decode("QQ=="), "A");
  EXPECT_FALSE(b64_decode("QR=="));
  EXPECT_FALSE(b64_decode("+/+/AZaz09=="));
  EXPECT_EQ(b64_decode("QUI="), "AB");
  EXPECT_FALSE(b64_decode("QUJ="));
  for (const char* ok : {"QQ==", "QUI=", "+/+/AZaz0w==", "AAECAwQFBgcICQ=="}) {
    auto d = b64_decode(ok);
    ASSERT_TRUE(d) << ok;
    EXPECT_EQ(b64_encode(*d), ok);
  }
}

}  // namespace
}  // namespace omnibus
