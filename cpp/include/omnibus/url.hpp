#pragma once
// Parsed messaging URL: scheme://[user[:password]@]host[:port][,host[:port]...][/path][?k=v&...]
//
// '#' and '+' are ordinary characters (MQTT topic filters use them); there is no
// fragment. Userinfo, path and query are percent-decoded.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace omnibus {

struct HostPort {
  std::string host;     // without IPv6 brackets; may be empty (mem:///topic)
  std::uint16_t port;   // 0 when the URL gave none
};

struct Url {
  std::string scheme;                  // lower-cased
  std::string user;                    // percent-decoded, empty when absent
  std::string password;                // percent-decoded, empty when absent
  bool has_userinfo = false;
  std::vector<HostPort> hosts;         // at least one entry
  std::string path;                    // percent-decoded, without the leading '/'
  std::vector<std::pair<std::string, std::string>> query;  // decoded, in order
  std::string text;                    // the URL as given, password masked

  // Throws Error(InvalidArgument) naming the URL and what was wrong.
  // Thread-safe; does not block.
  static Url parse(std::string_view text);

  // The URL with the password replaced by "***", for messages and logs.
  static std::string redact(std::string_view text);
};

// Percent-decodes `s`; throws InvalidArgument on a bad escape. `what` names the
// URL part in the error message.
std::string percent_decode(std::string_view s, std::string_view what);

}  // namespace omnibus
