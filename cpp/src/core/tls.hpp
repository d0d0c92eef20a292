#pragma once
// The TLS options every driver spells the same way: tls_ca, tls_cert, tls_key,
// tls_verify (issue 20: one spelling, documented once). The native libraries
// differ in how they take them; what a user may get wrong is checked here once.
#include <string>
#include <vector>

#include "omnibus/options.hpp"

namespace omnibus::detail {

struct TlsFiles {
  std::string ca;    // PEM file the server's certificate is checked against; empty: the system's CAs
  std::string cert;  // client certificate (PEM), with key
  std::string key;   // its private key (PEM)
  bool verify = true;
  // Whether any option differs from its default (a plaintext scheme refuses them).
  bool any_given() const { return !ca.empty() || !cert.empty() || !key.empty() || !verify; }
};

// The four option declarations, their docs prefixed with `scheme` ("mqtts://").
// Pure; thread-safe.
std::vector<OptionSpec> tls_option_specs(const std::string& scheme);

// Reads the four options of `o` (declared with tls_option_specs). Throws
// InvalidArgument naming `url_text` (already redacted by the caller's Url) when
// tls_cert and tls_key are not given together, or a given file cannot be read
// (with the reason from the system). Blocks only to open the files; thread-safe.
TlsFiles read_tls_options(const OptionValues& o, const std::string& scheme, const std::string& url_text);

}  // namespace omnibus::detail
