#pragma once
#include <memory>

namespace omnibus {
class Driver;
// awssqs:// -- Amazon SQS over HTTPS (libcurl, SigV4 signed by libcurl), the
// JSON protocol. See awssqs_driver.cpp for the model and README.md for URLs.
std::shared_ptr<Driver> make_awssqs_driver();
}  // namespace omnibus
