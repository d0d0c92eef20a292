#include "core/open.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "omnibus/publisher.hpp"
#include "omnibus/subscriber.hpp"

namespace omnibus::detail {

namespace {
// Where a password may come from besides the URL, so that it need not sit in
// a URL that ends up in shell history, process lists and configuration files.
std::vector<OptionSpec> credential_options() {
  return {
      {"password_file", OptionType::String, "",
       "file whose content (one trailing newline dropped) is the password, or the token where the protocol has one; "
       "the URL then gives at most the user"},
      {"password_env", OptionType::String, "",
       "environment variable that holds the password (or token); the URL then gives at most the user"},
  };
}

std::vector<OptionSpec> specs_of(Role role, const Driver& driver) {
  auto specs = role == Role::Publisher ? Publisher::portable_options() : Subscriber::portable_options();
  auto creds = credential_options();
  specs.insert(specs.end(), creds.begin(), creds.end());
  auto own = role == Role::Publisher ? driver.sender_options() : driver.receiver_options();
  specs.insert(specs.end(), own.begin(), own.end());
  return specs;
}

// Puts the password named by password_file= or password_env= into `url`.
// Errors name the file or the variable, never what it holds.
void resolve_password(Url& url, const OptionValues& options) {
  const auto& file = options.get_string("password_file");
  const auto& env = options.get_string("password_env");
  if (file.empty() && env.empty()) return;
  const std::string where = url.scheme + ":// " + url.text;
  if (!file.empty() && !env.empty())
    throw Error(ErrorCode::InvalidArgument, where + ": password_file and password_env are both given; give one");
  if (!url.password.empty())
    throw Error(ErrorCode::InvalidArgument,
                where + ": the URL has a password and " + (file.empty() ? "password_env" : "password_file") +
                    " gives another; give it once (USER@ in the URL with the option, or USER:PASSWORD@ alone)");
  std::string secret;
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    if (!in)
      throw Error(ErrorCode::InvalidArgument, where + ": password_file=" + file + " cannot be read (missing, or not readable by this process)");
    std::ostringstream buf;
    buf << in.rdbuf();
    secret = buf.str();
    if (!secret.empty() && secret.back() == '\n') secret.pop_back();
    if (!secret.empty() && secret.back() == '\r') secret.pop_back();
    if (secret.empty()) throw Error(ErrorCode::InvalidArgument, where + ": password_file=" + file + " is empty");
  } else {
    const char* value = std::getenv(env.c_str());
    if (!value || !*value)
      throw Error(ErrorCode::InvalidArgument, where + ": password_env=" + env + " names an environment variable that is unset or empty");
    secret = value;
  }
  url.password = std::move(secret);
  url.has_userinfo = true;
}
}  // namespace

Opened open_url(const std::string& url_text, const std::vector<std::pair<std::string, std::string>>& extra, Role role) {
  Url url = Url::parse(url_text);
  auto driver = DriverRegistry::instance().get(url.scheme);
  const auto own = specs_of(role, *driver);
  const auto other = specs_of(role == Role::Publisher ? Role::Subscriber : Role::Publisher, *driver);
  const char* name = role == Role::Publisher ? "publisher" : "subscriber";
  auto has = [](const std::vector<OptionSpec>& specs, const std::string& name) {
    return std::any_of(specs.begin(), specs.end(), [&](const OptionSpec& s) { return s.name == name; });
  };
  std::vector<std::pair<std::string, std::string>> given;
  for (const auto& pair : url.query) {
    if (!has(own, pair.first) && has(other, pair.first)) continue;
    given.push_back(pair);
  }
  given.insert(given.end(), extra.begin(), extra.end());
  auto options = OptionValues::parse(own, given, url.scheme + ":// " + name);
  resolve_password(url, options);
  return Opened{std::move(url), std::move(driver), std::move(options)};
}

}  // namespace omnibus::detail
