#pragma once
// The awssqs:// envelope: how a message's payload, key and headers travel as
// an SQS message body and message attributes, and how a received one's become
// them again. Pure functions over plain types, without libcurl, so that they
// are unit-tested (cpp/tests/awssqs_envelope_test.cpp) on every build;
// sqs.cpp and awssns_driver.cpp convert to and from SQS's JSON and SNS's form.
//
// Body: SQS takes text only (XML 1.0 characters: no NUL, no other control
// character but tab, CR and LF) and no empty body. A payload that is such
// non-empty text travels as itself; any other goes base64-encoded with the
// String attribute omnibus-body=base64 (an empty one as body "-" with
// omnibus-body=empty). Another client sees the base64 text and that attribute.
//
// Key: the attribute omnibus-key (String when it is SQS text, Binary for
// other bytes, DataType "String.empty" for the empty key).
//
// Headers: SQS allows 10 attributes of unique names ([A-Za-z0-9_.-], not
// starting with AWS. or Amazon.) and no empty value, and hands them out as an
// unordered map. When every header fits that -- distinct names, not starting
// with "omnibus-", non-empty values, and 10 attributes in all, omnibus-order
// included -- each header is an attribute of its own (String for text, Binary
// for other bytes), so every SQS client sees it, and a message of two or more
// headers carries omnibus-order: their names in order, comma-separated. Any
// other set of headers (repeats, names SQS refuses, too many) travels packed
// in one Binary attribute omnibus-headers: per header a 4-byte big-endian
// length and the name, then the same for the value.
//
// Received attributes that are not omnibus-* ones are headers: in the order
// omnibus-order gives when it names exactly them, else sorted by name. Number
// attributes arrive as their text. A malformed omnibus-* attribute arrives as
// an ordinary header instead of being lost.
//
// Thread-safe (no state), does not block, throws nothing but std::bad_alloc.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "omnibus/message.hpp"

namespace omnibus::detail::sqs {

inline constexpr std::string_view kBodyAttr = "omnibus-body";
inline constexpr std::string_view kKeyAttr = "omnibus-key";
inline constexpr std::string_view kHeadersAttr = "omnibus-headers";
inline constexpr std::string_view kOrderAttr = "omnibus-order";
inline constexpr std::string_view kReservedPrefix = "omnibus-";
inline constexpr std::string_view kEmptyType = "String.empty";
inline constexpr std::string_view kEmptyBody = "-";
inline constexpr std::size_t kMaxAttributes = 10;
inline constexpr std::size_t kMaxMessageBytes = 262144;  // 256 KiB: one message, and one batch request

// One message attribute. `value` is the text of a String or Number, the raw
// bytes of a Binary (the driver base64-encodes those for the JSON protocol).
struct Attribute {
  std::string name;
  std::string type;  // "String", "Binary", "Number", optionally with ".custom"
  std::string value;

  bool binary() const { return type.rfind("Binary", 0) == 0; }
  bool operator==(const Attribute& o) const { return name == o.name && type == o.type && value == o.value; }
};

// Well-formed UTF-8 of characters SQS accepts in a body or String value.
bool is_sqs_text(std::string_view s);
// A name SQS accepts for a message attribute.
bool is_attribute_name(std::string_view s);

struct Encoded {
  std::string body;
  std::vector<Attribute> attributes;
  // The size SQS counts against its 256 KiB limit: body plus each attribute's
  // name, type and value (Binary values as bytes, not base64).
  std::size_t bytes() const;
};

Encoded encode(const OutMessage& m);

struct Decoded {
  std::string payload;
  std::optional<std::string> key;
  Headers headers;
  bool foreign = true;  // no omnibus-* attribute: another client sent it

  bool operator==(const Decoded& o) const {
    return payload == o.payload && key == o.key && headers == o.headers && foreign == o.foreign;
  }
};

// Never fails: what is not a well-formed omnibus envelope arrives as it is.
Decoded decode(std::string body, std::vector<Attribute> attributes);

}  // namespace omnibus::detail::sqs
