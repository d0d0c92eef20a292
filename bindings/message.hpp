#pragma once
#include "common.hpp"

namespace omnibus::bind {

// What Python holds for a received message: the message and the codec that
// decodes its value.
struct PyMessage {
  MessagePtr msg;
  std::shared_ptr<BoundCodec> codec;
};

py::list headers_to_python(const Headers& headers);

}  // namespace omnibus::bind
