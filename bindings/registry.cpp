// Introspection of drivers, their options and URLs, for the CLI, docs and tests.
#include "common.hpp"
#include "omnibus/driver.hpp"
#include "omnibus/publisher.hpp"
#include "omnibus/subscriber.hpp"
#include "omnibus/url.hpp"

namespace omnibus {
std::string load_pulsar_driver(const std::string& path);  // drivers/builtin.hpp
}  // namespace omnibus

namespace omnibus::bind {

namespace {
py::list specs_to_python(const std::vector<OptionSpec>& specs) {
  py::list out;
  for (const auto& s : specs) {
    py::dict d;
    d["name"] = s.name;
    d["type"] = option_type_name(s.type);
    d["default"] = s.default_value;
    d["doc"] = s.doc;
    d["choices"] = s.choices;
    out.append(d);
  }
  return out;
}

py::list with_portable(std::vector<OptionSpec> portable, const std::vector<OptionSpec>& own) {
  portable.insert(portable.end(), own.begin(), own.end());
  return specs_to_python(portable);
}
}  // namespace

py::dict url_to_dict(const Url& u) {
  py::dict d;
  d["scheme"] = u.scheme;
  d["user"] = u.has_userinfo ? py::object(py::str(u.user)) : py::object(py::none());
  d["password"] = u.has_userinfo ? py::object(py::str(u.password)) : py::object(py::none());
  py::list hosts;
  for (const auto& h : u.hosts) hosts.append(py::make_tuple(h.host, h.port));
  d["hosts"] = hosts;
  d["path"] = u.path;
  d["query"] = u.query;
  return d;
}

void export_registry(py::module_& m) {
  m.def(
      "load_pulsar",
      [](const std::string& path) {
        py::gil_scoped_release release;
        return load_pulsar_driver(path);
      },
      py::arg("path"),
      "Load libpulsar from path (empty: not found) and register pulsar://; returns '' or why not.");
  m.def(
      "drivers",
      [] {
        py::list out;
        auto& reg = DriverRegistry::instance();
        for (const auto& scheme : reg.schemes()) {
          auto d = reg.get(scheme);
          py::dict row;
          row["scheme"] = scheme;
          row["description"] = d->description();
          row["publisher_options"] = with_portable(Publisher::portable_options(), d->sender_options());
          row["subscriber_options"] = with_portable(Subscriber::portable_options(), d->receiver_options());
          out.append(row);
        }
        return out;
      },
      "The drivers in this build: scheme, description and every option (name, type, default, doc).");
  m.def("unavailable_drivers", [] { return DriverRegistry::instance().unavailable(); },
        "[(scheme, reason)] for the protocol schemes this build has no driver for.");
  m.def(
      "parse_url",
      [](const std::string& text) { return url_to_dict(Url::parse(text)); },
      py::arg("url"), "Parse a URL as the engine does (for tools and tests); raises InvalidArgument.");
  m.def("redact_url", [](const std::string& text) { return Url::redact(text); }, py::arg("url"),
        "The URL as omnibus shows it in errors, reprs and logs: the password (or a lone userinfo, "
        "which may be a token) replaced by ***. Never raises.");
}

}  // namespace omnibus::bind
