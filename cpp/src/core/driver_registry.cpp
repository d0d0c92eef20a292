#include <algorithm>
#include <map>
#include <mutex>

#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"
#include "drivers/builtin.hpp"

namespace omnibus {

struct DriverRegistry::Impl {
  mutable std::mutex mu;
  std::map<std::string, std::shared_ptr<Driver>> drivers;
  std::map<std::string, std::string> unavailable;
};

DriverRegistry::DriverRegistry() : impl_(std::make_shared<Impl>()) {}

DriverRegistry& DriverRegistry::instance() {
  // Built-in drivers are registered explicitly, not by static constructors,
  // which a static library would drop at link time.
  static DriverRegistry* registry = [] {
    auto* r = new DriverRegistry();
    register_builtin_drivers(*r);
    return r;
  }();
  return *registry;
}

void DriverRegistry::add(std::shared_ptr<Driver> driver) {
  std::lock_guard lock(impl_->mu);
  auto scheme = driver->scheme();
  if (impl_->drivers.count(scheme))
    throw Error(ErrorCode::InvalidArgument, "a driver for scheme '" + scheme + "://' is already registered");
  impl_->unavailable.erase(scheme);
  impl_->drivers.emplace(scheme, std::move(driver));
}

void DriverRegistry::add_unavailable(const std::string& scheme, const std::string& reason) {
  std::lock_guard lock(impl_->mu);
  if (!impl_->drivers.count(scheme)) impl_->unavailable[scheme] = reason;
}

std::shared_ptr<Driver> DriverRegistry::get(const std::string& scheme) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->drivers.find(scheme);
  if (it != impl_->drivers.end()) return it->second;
  auto un = impl_->unavailable.find(scheme);
  if (un != impl_->unavailable.end())
    throw Error(ErrorCode::Unsupported, "the " + scheme + ":// driver is not in this build: " + un->second);
  std::string known;
  for (const auto& [name, _] : impl_->drivers) known += (known.empty() ? "" : ", ") + name + "://";
  throw Error(ErrorCode::InvalidArgument, "unknown URL scheme '" + scheme + "://'; known schemes: " + known);
}

std::vector<std::string> DriverRegistry::schemes() const {
  std::lock_guard lock(impl_->mu);
  std::vector<std::string> out;
  for (const auto& [name, _] : impl_->drivers) out.push_back(name);
  return out;
}

std::vector<std::pair<std::string, std::string>> DriverRegistry::unavailable() const {
  std::lock_guard lock(impl_->mu);
  return {impl_->unavailable.begin(), impl_->unavailable.end()};
}

void DriverRegistry::remove(const std::string& scheme) {
  std::lock_guard lock(impl_->mu);
  impl_->drivers.erase(scheme);
}

}  // namespace omnibus
