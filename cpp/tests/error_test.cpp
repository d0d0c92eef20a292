#include "omnibus/error.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace omnibus {
namespace {

TEST(Error, TableMatchesTheEnumInOrder) {
  std::size_t n = 0;
  const ErrorInfo* table = error_table(&n);
  ASSERT_EQ(n, 9u);
  std::set<std::string> names, python_names;
  for (std::size_t i = 0; i < n; ++i) {
    EXPECT_EQ(static_cast<std::size_t>(table[i].code), i);
    EXPECT_EQ(&error_info(table[i].code), &table[i]);
    names.insert(table[i].name);
    python_names.insert(table[i].python_name);
    EXPECT_NE(std::string(table[i].doc), "");
  }
  EXPECT_EQ(names.size(), n);
  EXPECT_EQ(python_names.size(), n);
}

TEST(Error, NamesAndDefaultRetryability) {
  EXPECT_STREQ(error_info(ErrorCode::Codec).name, "Codec");
  EXPECT_STREQ(error_info(ErrorCode::Codec).python_name, "CodecError");
  EXPECT_STREQ(error_info(ErrorCode::Unavailable).python_base, "ConnectionError");
  EXPECT_STREQ(error_info(ErrorCode::ResourceExhausted).python_base, "");
  for (auto c : {ErrorCode::Unavailable, ErrorCode::Timeout, ErrorCode::ResourceExhausted})
    EXPECT_TRUE(error_info(c).retryable) << error_info(c).name;
  for (auto c : {ErrorCode::InvalidArgument, ErrorCode::NotFound, ErrorCode::Unsupported, ErrorCode::Codec,
                 ErrorCode::Closed, ErrorCode::Internal})
    EXPECT_FALSE(error_info(c).retryable) << error_info(c).name;
}

TEST(Error, CarriesCodeMessageNativeCodeAndRetryability) {
  Error e(ErrorCode::Timeout, "took too long", -185);
  EXPECT_EQ(e.code(), ErrorCode::Timeout);
  EXPECT_STREQ(e.what(), "took too long");
  EXPECT_EQ(e.native_code(), -185);
  EXPECT_TRUE(e.retryable());

  Error overridden(ErrorCode::Timeout, "fatal timeout", 7, false);
  EXPECT_FALSE(overridden.retryable());

  Error copy = e;  // delivery results carry copies
  EXPECT_EQ(copy.code(), ErrorCode::Timeout);
  EXPECT_STREQ(copy.what(), "took too long");
  EXPECT_EQ(Error(ErrorCode::Internal, "x").native_code(), 0);
}

}  // namespace
}  // namespace omnibus
