#pragma once
// Shared by the libFuzzer targets in this folder. A target reports a finding by
// aborting (libFuzzer then saves the input); an omnibus::Error with the code
// the API documents for bad input is the expected way to say no, anything else
// escaping a parser is a finding.

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <typeinfo>

#include "omnibus/error.hpp"

namespace omnibus::fuzz {

[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz property violated: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

inline void check(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

// Runs `parse`; returns false when it rejected the input with Error(`allowed`).
// Any other exception aborts, naming its type.
template <class Fn>
bool accepts(ErrorCode allowed, Fn&& parse) {
  try {
    parse();
    return true;
  } catch (const Error& e) {
    if (e.code() != allowed)
      fail(std::string("omnibus::Error with code ") + error_info(e.code()).name + ": " + e.what());
    return false;
  } catch (const std::exception& e) {
    fail(std::string("unexpected exception ") + typeid(e).name() + ": " + e.what());
  } catch (...) {
    fail("unexpected exception of a non-std type");
  }
}

inline std::string_view as_text(const unsigned char* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// printable() (quoted) for a property message, shortened so a report stays readable.
inline std::string shown(std::string_view s) {
  return printable(s.substr(0, 200)) + (s.size() > 200 ? "..." : "");
}

}  // namespace omnibus::fuzz
