#pragma once
// The envelope targets' input format, so that seeds are readable files: lines
// ('\n') of fields ('\t'); a backslash takes the next byte literally, so any
// byte can appear in a field ("\\\n" is a newline inside one). A final line
// without '\n' counts; an empty line is a record of one empty field.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace omnibus::fuzz {

using Record = std::vector<std::string>;

inline std::vector<Record> records(std::string_view in) {
  std::vector<Record> out;
  Record record{std::string()};
  bool escaped = false;
  for (char c : in) {
    if (escaped) {
      record.back() += c;
      escaped = false;
    } else if (c == '\\') {
      escaped = true;
    } else if (c == '\t') {
      record.emplace_back();
    } else if (c == '\n') {
      out.push_back(std::move(record));
      record = Record{std::string()};
    } else {
      record.back() += c;
    }
  }
  if (!in.empty() && in.back() != '\n') out.push_back(std::move(record));
  return out;
}

// Eight bytes of the input as a number (for timestamps), 0 when shorter.
inline std::uint64_t first_u64(std::string_view in) {
  std::uint64_t v = 0;
  if (in.size() >= sizeof v) std::memcpy(&v, in.data(), sizeof v);
  return v;
}

}  // namespace omnibus::fuzz
