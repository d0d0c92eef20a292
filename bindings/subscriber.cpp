// omnibus.Subscriber
#include "message.hpp"
#include "notifier.hpp"
#include "omnibus/subscriber.hpp"

namespace omnibus::bind {

py::dict capabilities_dict(const Capabilities& c);  // publisher.cpp

namespace {

struct PySubscriber {
  std::shared_ptr<Subscriber> sub;
  std::shared_ptr<BoundCodec> codec;
  ~PySubscriber() {
    if (sub && Py_IsInitialized() && PyGILState_Check()) {
      py::gil_scoped_release release;  // close() joins the fetch thread
      sub.reset();
    }
  }
};

// Returns up to `max` messages, waiting up to `timeout` (None: forever) for
// the first. The buffer is tried with the GIL held first: the common case
// when messages are flowing costs no GIL round trip.
std::vector<MessagePtr> fetch(PySubscriber& s, std::size_t max, std::optional<double> timeout) {
  if (max == 0) throw Error(ErrorCode::InvalidArgument, "max_messages must be >= 1");
  auto got = s.sub->receive_batch(max, Clock::duration::zero());
  if (!got.empty()) return got;
  wait_interruptible(to_timeout(timeout, "timeout"), [&](Clock::duration slice) {
    got = s.sub->receive_batch(max, slice);
    return !got.empty();
  });
  return got;
}

py::list wrap(const PySubscriber& s, std::vector<MessagePtr>& msgs) {
  py::list out(msgs.size());
  for (std::size_t i = 0; i < msgs.size(); ++i)
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i),
                    py::cast(PyMessage{std::move(msgs[i]), s.codec}).release().ptr());
  return out;
}

std::vector<MessagePtr> to_messages(py::handle msgs) {
  std::vector<MessagePtr> out;
  if (py::isinstance<PyMessage>(msgs)) {
    out.push_back(msgs.cast<PyMessage&>().msg);
    return out;
  }
  for (auto item : py::reinterpret_borrow<py::iterable>(msgs)) {
    if (!py::isinstance<PyMessage>(item))
      throw py::type_error("expected an omnibus.Message or an iterable of them, got an item of type " +
                           std::string(py::str(py::type::handle_of(item).attr("__name__"))));
    out.push_back(item.cast<PyMessage&>().msg);
  }
  return out;
}

}  // namespace

void export_subscriber(py::module_& m) {
  py::class_<PySubscriber>(m, "Subscriber",
                           "Receives from one URL. Thread-safe. Iterate over it, or call receive()/receive_batch(). "
                           "Create with omnibus.subscriber(url, codec=..., **options).")
      .def(py::init([](const std::string& url, const std::vector<std::pair<std::string, std::string>>& options,
                       py::object codec) {
             auto bound = BoundCodec::from_python(codec);
             std::shared_ptr<Subscriber> sub;
             {
               py::gil_scoped_release release;
               sub = Subscriber::open(url, options);
             }
             return PySubscriber{std::move(sub), std::move(bound)};
           }),
           py::arg("url"), py::arg("options") = std::vector<std::pair<std::string, std::string>>{},
           py::arg("codec") = "raw")
      .def(
          "receive",
          [](PySubscriber& s, std::optional<double> timeout) {
            auto got = fetch(s, 1, timeout);
            if (got.empty())
              raise(Error(ErrorCode::Timeout, "no message on " + s.sub->url() + " within " +
                                                  std::to_string(timeout.value_or(0)) + " s"));
            return PyMessage{std::move(got[0]), s.codec};
          },
          py::arg("timeout") = py::none(),
          "Next message, waiting up to `timeout` seconds (None: no limit) with the GIL released; Ctrl-C "
          "interrupts within 100 ms. Raises Timeout when none came, Closed after close().")
      .def(
          "receive_batch",
          [](PySubscriber& s, std::size_t max_messages, std::optional<double> timeout) {
            auto got = fetch(s, max_messages, timeout);
            return wrap(s, got);
          },
          py::arg("max_messages") = 1000, py::arg("timeout") = py::none(),
          "Up to `max_messages` messages in one call, waiting up to `timeout` seconds for the first; [] on "
          "timeout.")
      .def(
          "ack",
          [](PySubscriber&, py::handle msgs) {
            auto list = to_messages(msgs);
            py::gil_scoped_release release;
            Subscriber::ack(list);
          },
          py::arg("messages"),
          "Acknowledge one message or an iterable of them, in one call to the driver. Settled messages (and "
          "all messages of an auto_ack=True subscriber) are skipped.")
      .def(
          "nack",
          [](PySubscriber&, py::handle msgs) {
            auto list = to_messages(msgs);
            py::gil_scoped_release release;
            Subscriber::nack(list);
          },
          py::arg("messages"),
          "Negative-acknowledge one message or an iterable of them: redeliver. Raises Unsupported when the "
          "protocol cannot (see capabilities()['nack']), InvalidArgument when a message came from an "
          "auto_ack=True subscriber (acked on hand-over, it will not come again); nothing is settled then.")
      .def(
          "_on_data",
          [](PySubscriber& s, const std::shared_ptr<Notifier>& notifier, std::uint64_t token) {
            py::gil_scoped_release release;  // takes the subscriber's lock
            if (!notifier) return s.sub->on_data(nullptr);
            return s.sub->on_data([notifier, token] { notifier->post(token); });
          },
          py::arg("notifier").none(true), py::arg("token") = 0,
          "For omnibus.aio: post `token` to `notifier` whenever messages are buffered, the fetch failed or the "
          "subscriber closed (None: stop). False when the receiver fetches on the caller's thread (Kafka).")
      .def(
          "close",
          [](PySubscriber& s) {
            py::gil_scoped_release release;
            s.sub->close();
          },
          "Stop receiving; unacked and buffered messages go back to the broker for redelivery. Idempotent.")
      .def_property_readonly("closed", [](const PySubscriber& s) { return s.sub->closed(); })
      .def_property_readonly("url", [](const PySubscriber& s) { return s.sub->url(); })
      .def("__repr__", [](const PySubscriber& s) {
        return endpoint_repr("Subscriber", s.sub->url(), s.codec->name(), s.sub->closed(),
                             s.sub->closed() ? std::nullopt : s.sub->connected());
      })
      .def_property_readonly("codec", [](const PySubscriber& s) { return s.codec->name(); })
      .def_property_readonly("auto_ack", [](const PySubscriber& s) { return s.sub->config().auto_ack; })
      .def_property_readonly("buffered", [](const PySubscriber& s) { return s.sub->buffered(); },
                             "Messages fetched ahead and waiting in the local buffer.")
      .def("capabilities", [](const PySubscriber& s) { return capabilities_dict(s.sub->capabilities()); })
      .def_property_readonly("connected", [](const PySubscriber& s) { return s.sub->connected(); },
                             "True while connected to the broker, False while reconnecting, None when the "
                             "driver cannot tell (kafka:// with rdkafka.statistics.interval.ms=0).")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__",
           [](PySubscriber& s) {
             std::vector<MessagePtr> got;
             try {
               got = fetch(s, 1, std::nullopt);
             } catch (const Error& e) {
               if (e.code() == ErrorCode::Closed) throw py::stop_iteration();
               throw;
             }
             return PyMessage{std::move(got[0]), s.codec};
           })
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PySubscriber& s, py::args) {
        py::gil_scoped_release release;
        s.sub->close();
        return false;
      });
}

}  // namespace omnibus::bind
