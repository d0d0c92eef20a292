#pragma once
#include <memory>

namespace omnibus {
class Driver;
// awssqs:// -- Amazon SQS over HTTPS (libcurl, SigV4 signed by libcurl), the
// JSON protocol. See awssqs_driver.cpp for the model and README.md for URLs.
std::shared_ptr<Driver> make_awssqs_driver();
// awssns:// -- Amazon SNS: PublishBatch; subscribers through SQS queues
// subscribed with raw delivery (awssns_driver.cpp; same library as awssqs://).
std::shared_ptr<Driver> make_awssns_driver();
}  // namespace omnibus
