#pragma once
// Shared by Publisher::open and Subscriber::open.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "omnibus/driver.hpp"

namespace omnibus::detail {

struct Opened {
  Url url;
  std::shared_ptr<Driver> driver;
  OptionValues options;
};

enum class Role { Publisher, Subscriber };

// Parses `url_text`, finds its driver and validates the options of one role:
// the portable ones of that role plus the driver's. A URL query option that
// only the other role declares is skipped, so one URL serves both sides;
// keyword options (`extra`) must belong to this role. Throws
// InvalidArgument/Unsupported.
Opened open_url(const std::string& url_text, const std::vector<std::pair<std::string, std::string>>& extra, Role role);

}  // namespace omnibus::detail
