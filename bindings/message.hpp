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
// Python headers (a dict or a list of (name, value) pairs; None: none) to
// Headers; TypeError naming message `index` otherwise. In publisher.cpp.
Headers to_headers(py::handle h, std::size_t index);

}  // namespace omnibus::bind
