// omnibus.Message: a received message. The payload is exposed without a copy
// through the buffer protocol (memoryview(msg), msg.payload).
#include "message.hpp"

namespace omnibus::bind {

py::list headers_to_python(const Headers& headers) {
  py::list out;
  for (const auto& [k, v] : headers) out.append(py::make_tuple(py::str(k), py::bytes(v)));
  return out;
}

void export_message(py::module_& m) {
  py::class_<PyMessage>(m, "Message", py::buffer_protocol(),
                        "A received message. Thread-safe. ack()/nack() settle it once; later calls are no-ops, except nack() of a "
                        "message that an auto_ack subscriber acked on hand-over, which raises InvalidArgument.")
      .def_buffer([](PyMessage& self) {
        const std::string& p = self.msg->payload();
        return py::buffer_info(const_cast<char*>(p.data()), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(p.size())}, {1}, /*readonly=*/true);
      })
      .def_property_readonly(
          "payload", [](py::object self) { return py::memoryview(self); },
          "The payload as a read-only memoryview, without a copy; bytes(msg.payload) copies it.")
      .def_property_readonly(
          "value", [](const PyMessage& self) { return self.codec->decode(*self.msg); },
          "The payload decoded by the subscriber's codec (bytes for 'raw'). Raises CodecError when it cannot be decoded.")
      .def_property_readonly(
          "key",
          [](const PyMessage& self) -> py::object {
            const auto& k = self.msg->key();
            if (!k) return py::none();
            return py::bytes(*k);
          },
          "The message key as bytes, or None.")
      .def_property_readonly(
          "headers", [](const PyMessage& self) { return headers_to_python(self.msg->headers()); },
          "Headers as a list of (name, bytes) pairs, in order; a name may repeat.")
      .def(
          "header",
          [](const PyMessage& self, const std::string& name) -> py::object {
            for (const auto& [k, v] : self.msg->headers())
              if (k == name) return py::bytes(v);
            return py::none();
          },
          py::arg("name"), "The first value of header `name`, or None.")
      .def_property_readonly("topic", [](const PyMessage& self) { return self.msg->topic(); })
      .def_property_readonly("timestamp_ms", [](const PyMessage& self) { return self.msg->timestamp_ms(); },
                             "Publish time, milliseconds since the Unix epoch.")
      .def_property_readonly("delivery_attempt", [](const PyMessage& self) { return self.msg->delivery_attempt(); },
                             "1 on first delivery, 2 on the first redelivery, ...")
      .def_property_readonly("settled", [](const PyMessage& self) { return self.msg->settled(); })
      .def_property_readonly(
          "reply_to",
          [](const PyMessage& self) -> py::object {
            const auto& r = self.msg->reply_to();
            if (r.empty()) return py::none();
            return py::str(r);
          },
          "The requester's reply address (an inbox subject) when the message was sent with request(); None when "
          "it was published and nobody waits for a reply.")
      .def(
          "reply",
          [](PyMessage& self, py::handle value, py::handle key, py::handle headers) {
            OutMessage m;
            m.payload = make_bytes(self.codec->encode(value, 0));
            if (!key.is_none()) m.key = to_bytes(key, "key");
            m.headers = to_headers(headers, 0);
            py::gil_scoped_release release;
            self.msg->reply(std::move(m));
          },
          py::arg("value"), py::kw_only(), py::arg("key") = py::none(), py::arg("headers") = py::none(),
          "Answer a request: encode `value` with the subscriber's codec and send it to reply_to. Fire and forget: "
          "a reply the requester no longer waits for is dropped. Does not ack the message. Raises InvalidArgument "
          "when the message has no reply address (reply_to is None), Unsupported where the protocol has no "
          "request-reply, Closed when the subscriber was closed.")
      .def(
          "ack",
          [](PyMessage& self) {
            py::gil_scoped_release release;
            self.msg->ack();
          },
          "Acknowledge: the broker will not deliver it again. Raises Closed when the subscriber is closed. On a "
          "subscriber with auto_ack=True the message was acked when it was handed over, so ack() does nothing "
          "(what it asks for already holds).")
      .def(
          "nack",
          [](PyMessage& self) {
            py::gil_scoped_release release;
            self.msg->nack();
          },
          "Negative-acknowledge: redeliver. Raises Unsupported when the protocol cannot (capabilities()['nack']), "
          "InvalidArgument when the subscriber has auto_ack=True: the message was acked when handed over and "
          "will not come again; open the subscriber with auto_ack=False to get nacked messages redelivered.")
      .def("__len__", [](const PyMessage& self) { return self.msg->payload().size(); })
      .def("__repr__", [](const PyMessage& self) {
        return "<omnibus.Message topic=" + self.msg->topic() + " bytes=" + std::to_string(self.msg->payload().size()) +
               " attempt=" + std::to_string(self.msg->delivery_attempt()) + ">";
      });
}

}  // namespace omnibus::bind
