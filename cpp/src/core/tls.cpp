#include "core/tls.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "omnibus/error.hpp"

namespace omnibus::detail {

std::vector<OptionSpec> tls_option_specs(const std::string& scheme) {
  const std::string s = scheme + "://: ";
  return {
      {"tls_ca", OptionType::String, "",
       s + "CA certificate file (PEM) the server's certificate is checked against; default: the system's CAs"},
      {"tls_cert", OptionType::String, "",
       s + "client certificate file (PEM), for servers that verify clients (with tls_key)"},
      {"tls_key", OptionType::String, "", s + "the client certificate's private key file (PEM)"},
      {"tls_verify", OptionType::Bool, "true",
       s + "check the server's certificate and that it names the host; false: encrypted but not authenticated"},
  };
}

namespace {

void check_readable(const std::string& option, const std::string& path, const std::string& url_text) {
  if (path.empty()) return;
  std::ifstream f(path, std::ios::binary);
  if (!f)
    throw Error(ErrorCode::InvalidArgument, option + "=" + path + " cannot be loaded (" + std::strerror(errno) +
                                                ") for " + url_text + "; give a readable PEM file");
}

}  // namespace

TlsFiles read_tls_options(const OptionValues& o, const std::string& scheme, const std::string& url_text) {
  TlsFiles t{o.get_string("tls_ca"), o.get_string("tls_cert"), o.get_string("tls_key"), o.get_bool("tls_verify")};
  if (t.cert.empty() != t.key.empty())
    throw Error(ErrorCode::InvalidArgument, scheme + ":// " + url_text +
                                                ": tls_cert and tls_key go together (the client certificate and its "
                                                "private key, PEM files); one of them is missing");
  check_readable("tls_ca", t.ca, url_text);
  check_readable("tls_cert", t.cert, url_text);
  check_readable("tls_key", t.key, url_text);
  return t;
}

}  // namespace omnibus::detail
