#pragma once
// The gcppubsub:// sender and receiver, made by gcppubsub_driver.cpp.

#include <memory>

#include "drivers/gcp/pubsub.hpp"

namespace omnibus::detail::gcp {

// Checks (or creates, with create=true) the URL's topic, then returns a
// sender publishing to it. Blocks for one or two RPCs; throws
// InvalidArgument (a subscription URL, refused credentials), NotFound,
// Unavailable.
std::shared_ptr<Sender> make_pubsub_sender(std::shared_ptr<Client> c, const OptionValues& o);
std::vector<OptionSpec> sender_option_specs();

// Finds or creates the subscription (see gcppubsub_driver.cpp for which),
// then starts its StreamingPull threads. Blocks for a few RPCs; throws as
// make_pubsub_sender.
std::shared_ptr<Receiver> make_pubsub_receiver(std::shared_ptr<Client> c, const OptionValues& o,
                                               const ReceiverSettings& settings);
std::vector<OptionSpec> receiver_option_specs();

}  // namespace omnibus::detail::gcp
