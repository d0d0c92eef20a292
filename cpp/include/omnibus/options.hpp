#pragma once
// Declarative options. A driver (and the portable layer) declares each option
// once -- name, type, default, doc -- and validation, error messages and the
// CLI/docs listings are derived from those declarations.

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace omnibus {

enum class OptionType { Bool, Int, Float, String, Choice };

// A spec whose name ends in '.' (e.g. "rdkafka.") declares a family: any
// option "rdkafka.<anything>" is accepted as a string and handed to the
// driver, which passes it to its native library (and reports its error).
struct OptionSpec {
  std::string name;
  OptionType type;
  std::string default_value;         // textual, parsed with the same rules as URL values
  std::string doc;
  std::vector<std::string> choices;  // only for OptionType::Choice
  std::int64_t min = INT64_MIN;      // only for Int
  std::int64_t max = INT64_MAX;      // only for Int
};

const char* option_type_name(OptionType t) noexcept;

using OptionValue = std::variant<bool, std::int64_t, double, std::string>;

// Validated values for one set of specs; every declared option has a value.
// Immutable after construction, so safe to share between threads.
class OptionValues {
 public:
  // Validates `given` (URL query pairs first, then keyword options; a later
  // value for the same name overrides an earlier one) against `specs`.
  // Throws InvalidArgument for an unknown name (listing the valid ones with
  // type and default), a value of the wrong type, a bad choice or a value out
  // of range. `context` names the owner, e.g. "mem:// publisher".
  static OptionValues parse(const std::vector<OptionSpec>& specs,
                            const std::vector<std::pair<std::string, std::string>>& given,
                            const std::string& context);

  bool get_bool(const std::string& name) const;
  std::int64_t get_int(const std::string& name) const;
  double get_float(const std::string& name) const;
  const std::string& get_string(const std::string& name) const;  // String and Choice
  bool was_given(const std::string& name) const;
  // The given options of a family, e.g. prefix "rdkafka." -> {("linger.ms", "5")}.
  std::vector<std::pair<std::string, std::string>> family(const std::string& prefix) const;
  const std::map<std::string, OptionValue>& values() const { return values_; }

 private:
  const OptionValue& at(const std::string& name) const;
  std::map<std::string, OptionValue> values_;
  std::vector<std::string> given_;
};

// "name (type, default X): doc" lines, one per spec, for errors and --help.
std::string describe_options(const std::vector<OptionSpec>& specs);

}  // namespace omnibus
