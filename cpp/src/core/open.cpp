#include "core/open.hpp"

#include <algorithm>

namespace omnibus::detail {

Opened open_url(const std::string& url_text, const std::vector<std::pair<std::string, std::string>>& extra,
                const char* role, std::vector<OptionSpec> own, const std::vector<OptionSpec>& other) {
  Url url = Url::parse(url_text);
  auto driver = DriverRegistry::instance().get(url.scheme);
  auto has = [](const std::vector<OptionSpec>& specs, const std::string& name) {
    return std::any_of(specs.begin(), specs.end(), [&](const OptionSpec& s) { return s.name == name; });
  };
  std::vector<std::pair<std::string, std::string>> given;
  for (const auto& pair : url.query) {
    if (!has(own, pair.first) && has(other, pair.first)) continue;
    given.push_back(pair);
  }
  given.insert(given.end(), extra.begin(), extra.end());
  auto options = OptionValues::parse(own, given, url.scheme + ":// " + role);
  return Opened{std::move(url), std::move(driver), std::move(options)};
}

}  // namespace omnibus::detail
