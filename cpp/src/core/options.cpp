#include "omnibus/options.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "omnibus/error.hpp"

namespace omnibus {
namespace {

[[noreturn]] void invalid(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

OptionValue convert(const OptionSpec& spec, const std::string& text, const std::string& context) {
  auto wrong = [&](const std::string& expected) -> std::string {
    return "option '" + spec.name + "' of " + context + " expects " + expected + ", got '" + text + "'";
  };
  switch (spec.type) {
    case OptionType::Bool: {
      auto v = lower(text);
      if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
      if (v == "false" || v == "0" || v == "no" || v == "off") return false;
      invalid(wrong("a bool (true/false, 1/0, yes/no, on/off)"));
    }
    case OptionType::Int: {
      errno = 0;
      char* end = nullptr;
      long long v = std::strtoll(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || errno == ERANGE) invalid(wrong("an int"));
      if (v < spec.min || v > spec.max) {
        invalid(wrong("an int in " + std::to_string(spec.min) + ".." +
                      (spec.max == INT64_MAX ? std::string("") : std::to_string(spec.max))));
      }
      return static_cast<std::int64_t>(v);
    }
    case OptionType::Float: {
      errno = 0;
      char* end = nullptr;
      double v = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v)) invalid(wrong("a number"));
      if (v < static_cast<double>(spec.min) || v > static_cast<double>(spec.max))
        invalid(wrong("a number in " + std::to_string(spec.min) + ".." + std::to_string(spec.max)));
      return v;
    }
    case OptionType::String:
      return text;
    case OptionType::Choice:
      if (std::find(spec.choices.begin(), spec.choices.end(), text) == spec.choices.end())
        invalid(wrong("one of " + join(spec.choices, ", ")));
      return text;
  }
  invalid("unreachable option type");
}

}  // namespace

const char* option_type_name(OptionType t) noexcept {
  switch (t) {
    case OptionType::Bool: return "bool";
    case OptionType::Int: return "int";
    case OptionType::Float: return "float";
    case OptionType::String: return "str";
    case OptionType::Choice: return "choice";
  }
  return "?";
}

std::string describe_options(const std::vector<OptionSpec>& specs) {
  std::string out;
  for (const auto& s : specs) {
    out += "  " + s.name + (s.name.back() == '.' ? "<name>" : "") + " (" + option_type_name(s.type);
    if (s.type == OptionType::Choice) out += ": " + join(s.choices, "|");
    out += ", default " + (s.default_value.empty() ? std::string("''") : s.default_value) + "): " + s.doc + "\n";
  }
  return out;
}

OptionValues OptionValues::parse(const std::vector<OptionSpec>& specs,
                                 const std::vector<std::pair<std::string, std::string>>& given,
                                 const std::string& context) {
  OptionValues out;
  auto is_family = [](const OptionSpec& s) { return !s.name.empty() && s.name.back() == '.'; };
  for (const auto& spec : specs)
    if (!is_family(spec)) out.values_[spec.name] = convert(spec, spec.default_value, context);
  // Plain references, not a structured binding: the lambdas below capture
  // `name`, which C++17 (and clang before 16, used by the fuzz build) forbids.
  for (const auto& option : given) {
    const std::string& name = option.first;
    const std::string& text = option.second;
    auto it = std::find_if(specs.begin(), specs.end(), [&](const OptionSpec& s) { return s.name == name; });
    if (it == specs.end()) {
      auto fam = std::find_if(specs.begin(), specs.end(), [&](const OptionSpec& s) {
        return is_family(s) && name.size() > s.name.size() && name.compare(0, s.name.size(), s.name) == 0;
      });
      if (fam != specs.end()) {
        out.values_[name] = text;
        out.given_.push_back(name);
        continue;
      }
    }
    if (it == specs.end() || is_family(*it)) {
      std::vector<std::string> names;
      for (const auto& s : specs) names.push_back(is_family(s) ? s.name + "<name>" : s.name);
      std::sort(names.begin(), names.end());
      invalid("unknown option '" + name + "' for " + context + "; valid options are: " + join(names, ", ") +
              "\n" + describe_options(specs));
    }
    out.values_[name] = convert(*it, text, context);
    out.given_.push_back(name);
  }
  return out;
}

const OptionValue& OptionValues::at(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw Error(ErrorCode::Internal, "option '" + name + "' was not declared");
  return it->second;
}

bool OptionValues::get_bool(const std::string& name) const { return std::get<bool>(at(name)); }
std::int64_t OptionValues::get_int(const std::string& name) const { return std::get<std::int64_t>(at(name)); }
double OptionValues::get_float(const std::string& name) const { return std::get<double>(at(name)); }
const std::string& OptionValues::get_string(const std::string& name) const {
  return std::get<std::string>(at(name));
}
std::vector<std::pair<std::string, std::string>> OptionValues::family(const std::string& prefix) const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& name : given_) {
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    auto rest = name.substr(prefix.size());
    // Given twice: values_ already holds the later value; list the name once.
    if (std::none_of(out.begin(), out.end(), [&](const auto& p) { return p.first == rest; }))
      out.emplace_back(rest, std::get<std::string>(values_.at(name)));
  }
  return out;
}

bool OptionValues::was_given(const std::string& name) const {
  return std::find(given_.begin(), given_.end(), name) != given_.end();
}

}  // namespace omnibus
