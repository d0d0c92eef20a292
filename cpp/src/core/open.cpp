#include "core/open.hpp"

#include <algorithm>

#include "omnibus/publisher.hpp"
#include "omnibus/subscriber.hpp"

namespace omnibus::detail {

namespace {
std::vector<OptionSpec> specs_of(Role role, const Driver& driver) {
  auto specs = role == Role::Publisher ? Publisher::portable_options() : Subscriber::portable_options();
  auto own = role == Role::Publisher ? driver.sender_options() : driver.receiver_options();
  specs.insert(specs.end(), own.begin(), own.end());
  return specs;
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
  return Opened{std::move(url), std::move(driver), std::move(options)};
}

}  // namespace omnibus::detail
