// omnibus._core.Bridge (wrapped by omnibus.bridge in python/omnibus/_bridge.py)
#include "message.hpp"
#include "omnibus/bridge.hpp"

namespace omnibus::bind {

namespace {

struct PyBridge {
  std::shared_ptr<Bridge> bridge;
  ~PyBridge() {
    if (bridge && Py_IsInitialized() && PyGILState_Check()) {
      // stop() joins the bridge thread, which may wait for the GIL in the transform.
      py::gil_scoped_release release;
      bridge.reset();
    }
  }
};

// The transform as the engine calls it: once per batch, with the GIL taken
// only for the call. Items come back as None (drop and ack), the Message
// itself (send it as mapped), an omnibus.Out (value, key, headers), or any
// other value (encoded with the sink codec; key and headers as mapped).
BridgeTransform make_transform(py::object fn, std::shared_ptr<BoundCodec> source_codec,
                               std::shared_ptr<BoundCodec> sink_codec, py::object out_cls) {
  // The bridge (and this transform) may be destroyed on a thread without the GIL.
  auto ref = share_with_threads(std::move(fn));
  auto out_ref = share_with_threads(std::move(out_cls));
  return [ref, out_ref, source_codec, sink_codec](std::vector<BridgeItem>& items) {
    py::gil_scoped_acquire gil;
    try {
      py::list in(items.size());
      for (std::size_t i = 0; i < items.size(); ++i)
        PyList_SET_ITEM(in.ptr(), static_cast<Py_ssize_t>(i),
                        py::cast(PyMessage{items[i].source, source_codec}).release().ptr());
      py::object result = (*ref)(in);
      if (result.is_none()) {
        throw Error(ErrorCode::InvalidArgument,
                    "bridge transform returned None; it must return a list with one entry per message "
                    "(None in the list drops that message)");
      }
      const bool is_seq = py::isinstance<py::sequence>(result) && !py::isinstance<py::str>(result) &&
                          !py::isinstance<py::bytes>(result);
      if (!is_seq || py::len(result) != items.size())
        throw Error(ErrorCode::InvalidArgument,
                    "bridge transform must return a list of the same length as its input (" +
                        std::to_string(items.size()) + " messages), got " +
                        std::string(py::str(py::type::handle_of(result).attr("__name__"))) +
                        (is_seq ? " of length " + std::to_string(py::len(result)) : ""));
      py::sequence seq = py::reinterpret_borrow<py::sequence>(result);
      for (std::size_t i = 0; i < items.size(); ++i) {
        py::object r = seq[i];
        auto& item = items[i];
        if (r.is_none()) {
          item.drop = true;
        } else if (py::isinstance<PyMessage>(r)) {
          auto& m = r.cast<PyMessage&>();
          if (m.msg != item.source) item.out.payload = m.msg->payload_ptr();
        } else if (py::isinstance(r, *out_ref)) {
          item.out.payload = make_bytes(sink_codec->encode(r.attr("value"), i));
          py::object key = r.attr("key");
          if (!key.is_none()) item.out.key = to_bytes(key, "key");
          py::object headers = r.attr("headers");
          if (!headers.is_none()) item.out.headers = to_headers(headers, i);
        } else {
          item.out.payload = make_bytes(sink_codec->encode(r, i));
        }
      }
    } catch (py::error_already_set& e) {
      // Turned into an omnibus error here, with the GIL still held, so that
      // the Python exception is released safely; the bridge dead-letters the
      // batch with this text.
      throw Error(ErrorCode::InvalidArgument, std::string("bridge transform raised ") + e.what());
    } catch (py::cast_error& e) {
      throw Error(ErrorCode::InvalidArgument, std::string("bridge transform result: ") + e.what());
    }
  };
}

py::dict stats_dict(const BridgeStats& s) {
  py::dict d;
  d["consumed"] = s.consumed;
  d["published"] = s.published;
  d["dropped"] = s.dropped;
  d["dead_lettered"] = s.dead_lettered;
  d["failed"] = s.failed;
  d["retried"] = s.retried;
  d["acked"] = s.acked;
  d["in_flight"] = s.in_flight;
  return d;
}

}  // namespace

void export_bridge(py::module_& m) {
  py::class_<PyBridge>(m, "Bridge",
                       "Moves messages from a source URL to a sink URL in the engine's threads, acking each "
                       "source message once the sink confirmed it. Thread-safe. Create with omnibus.bridge().")
      .def(py::init([](const std::string& source, const std::string& sink, std::size_t batch,
                       std::size_t max_in_flight, const std::string& key, bool keep_headers,
                       const std::vector<std::pair<std::string, std::string>>& extra_headers, bool keep_timestamp,
                       py::object source_codec, py::object sink_codec,
                       const std::string& dead_letter, py::object transform, py::object out_cls,
                       const std::vector<std::pair<std::string, std::string>>& source_options,
                       const std::vector<std::pair<std::string, std::string>>& sink_options) {
             BridgeConfig c;
             c.batch = batch;
             c.max_in_flight = max_in_flight;
             c.key_template = key;
             c.keep_headers = keep_headers;
             for (const auto& [k, v] : extra_headers) c.extra_headers.emplace_back(k, v);
             c.keep_timestamp = keep_timestamp;
             // A codec written in Python decodes and encodes in the transform
             // only; the engine then passes payloads through as raw bytes.
             c.source_codec = py::isinstance<py::str>(source_codec) ? source_codec.cast<std::string>() : "raw";
             c.sink_codec = py::isinstance<py::str>(sink_codec) ? sink_codec.cast<std::string>() : "raw";
             c.dead_letter_url = dead_letter;
             BridgeTransform fn;
             if (!transform.is_none()) {
               if (!PyCallable_Check(transform.ptr()))
                 throw Error(ErrorCode::InvalidArgument,
                             "bridge transform must be callable (a function taking a list of messages), got " +
                                 std::string(py::str(py::type::handle_of(transform).attr("__name__"))));
               fn = make_transform(std::move(transform), BoundCodec::from_python(source_codec),
                                   BoundCodec::from_python(sink_codec), std::move(out_cls));
             }
             std::shared_ptr<Bridge> bridge;
             {
               py::gil_scoped_release release;
               bridge = Bridge::open(source, sink, std::move(c), std::move(fn), source_options, sink_options);
             }
             return PyBridge{std::move(bridge)};
           }),
           py::arg("source"), py::arg("sink"), py::arg("batch"), py::arg("max_in_flight"), py::arg("key"),
           py::arg("keep_headers"), py::arg("extra_headers"), py::arg("keep_timestamp"), py::arg("source_codec"),
           py::arg("sink_codec"), py::arg("dead_letter"), py::arg("transform"), py::arg("out_cls"),
           py::arg("source_options"), py::arg("sink_options"))
      .def_property_readonly("stats", [](const PyBridge& b) { return stats_dict(b.bridge->stats()); },
                             "Counters: consumed, published, dropped, dead_lettered, failed, retried, acked, in_flight.")
      .def_property_readonly("last_error", [](const PyBridge& b) { return b.bridge->last_error(); })
      .def_property_readonly("failed", [](const PyBridge& b) { return b.bridge->failed(); })
      .def_property_readonly("delivery_guarantee", [](const PyBridge& b) { return b.bridge->delivery_guarantee(); })
      .def_property_readonly("source_guarantee", [](const PyBridge& b) { return b.bridge->source_guarantee(); })
      .def_property_readonly("sink_guarantee", [](const PyBridge& b) { return b.bridge->sink_guarantee(); })
      .def(
          "wait_idle",
          [](PyBridge& b, std::optional<double> timeout) {
            return wait_interruptible(to_timeout(timeout, "timeout"),
                                      [&](Clock::duration slice) { return b.bridge->wait_idle(slice); });
          },
          py::arg("timeout") = py::none(),
          "Blocks until nothing is in flight (True) or the timeout passed (False). Ctrl-C interrupts it.")
      .def(
          "stop",
          [](PyBridge& b, double timeout) {
            if (timeout < 0) throw Error(ErrorCode::InvalidArgument, "timeout must be >= 0 seconds");
            b.bridge->request_stop();
            bool drained = false;
            try {
              drained = wait_interruptible(to_timeout(timeout, "timeout"),
                                           [&](Clock::duration slice) { return b.bridge->wait_idle(slice); });
            } catch (py::error_already_set&) {
              // Ctrl-C: stop at once; what is in flight stays unacked at the source.
              py::gil_scoped_release release;
              b.bridge->stop(Clock::duration::zero());
              throw;
            }
            py::gil_scoped_release release;
            return b.bridge->stop(drained ? std::chrono::seconds(1) : Clock::duration::zero()) && drained;
          },
          py::arg("timeout") = 10.0,
          "Stops receiving, waits up to `timeout` seconds for in-flight messages to be confirmed and acked, "
          "then closes both ends. True when everything was settled; False leaves the rest unacked at the "
          "source (counted in stats['failed']). Idempotent; Ctrl-C interrupts the wait.");
}

}  // namespace omnibus::bind
