// omnibus.Delivery: the delivery result of one publish() or publish_many() call.
#include "delivery.hpp"

namespace omnibus::bind {

namespace {
py::list failures_to_python(const DeliveryTracker& t) {
  py::list out;
  for (const auto& [i, e] : t.failures()) out.append(py::make_tuple(i, make_exception(e)));
  return out;
}

bool wait(const DeliveryTracker& t, std::optional<double> timeout) {
  if (t.done()) return true;
  return wait_interruptible(to_timeout(timeout, "timeout"), [&](Clock::duration slice) { return t.wait_for(slice); });
}

// The exception for a finished tracker with failures: the first failure's
// class, a message naming each failed index, and .failures with all of them.
py::object batch_exception(const DeliveryTracker& t) {
  auto failures = t.failures();
  if (failures.empty()) return py::none();
  if (t.size() == 1) return make_exception(failures[0].second);
  std::string text = std::to_string(failures.size()) + " of " + std::to_string(t.size()) + " messages failed:";
  for (std::size_t k = 0; k < failures.size() && k < 10; ++k)
    text += " [" + std::to_string(failures[k].first) + "] " + failures[k].second.what() + ";";
  if (failures.size() > 10) text += " ... (see .failures)";
  const Error& first = failures[0].second;
  py::object exc = make_exception(Error(first.code(), text, first.native_code(), first.retryable()));
  exc.attr("failures") = failures_to_python(t);
  return exc;
}
}  // namespace

void export_delivery(py::module_& m) {
  py::class_<PyDelivery>(m, "Delivery",
                         "Delivery results of one publish() (one message) or publish_many() (a batch) call. "
                         "Thread-safe.")
      .def("__len__", [](const PyDelivery& d) { return d.tracker->size(); })
      .def("done", [](const PyDelivery& d) { return d.tracker->done(); },
           "True once every message has a result (delivered or failed).")
      .def(
          "wait", [](const PyDelivery& d, std::optional<double> timeout) { return wait(*d.tracker, timeout); },
          py::arg("timeout") = py::none(),
          "Block up to `timeout` seconds (None: no limit) for all results, with the GIL released; "
          "Ctrl-C interrupts. Returns done().")
      .def(
          "result",
          [](const PyDelivery& d, std::optional<double> timeout) {
            if (!wait(*d.tracker, timeout))
              raise(Error(ErrorCode::Timeout, "delivery of " + std::to_string(d.tracker->size()) +
                                                  " message(s) not confirmed within " +
                                                  std::to_string(timeout.value_or(0)) + " s"));
            py::object exc = batch_exception(*d.tracker);
            if (!exc.is_none()) raise_object(exc);
          },
          py::arg("timeout") = py::none(),
          "Wait like wait(), then return None when every message was delivered, or raise: the error of the "
          "first failed message, naming every failed index, with .failures = [(index, error), ...]. "
          "Raises Timeout when results are still missing.")
      .def(
          "exception",
          [](const PyDelivery& d, std::optional<double> timeout) -> py::object {
            if (!wait(*d.tracker, timeout))
              raise(Error(ErrorCode::Timeout, "delivery results still missing"));
            return batch_exception(*d.tracker);
          },
          py::arg("timeout") = py::none(), "Like result(), but returns the exception (or None) instead of raising.")
      .def("failures", [](const PyDelivery& d) { return failures_to_python(*d.tracker); },
           "[(index, error), ...] for the messages that failed so far, by index.")
      .def(
          "add_done_callback",
          [](py::object self, py::function fn) {
            auto& d = self.cast<PyDelivery&>();
            auto holder = share_with_threads(py::make_tuple(fn, self));
            d.tracker->on_done([holder] {
              if (!Py_IsInitialized()) return;
              py::gil_scoped_acquire gil;
              py::tuple pair = holder->cast<py::tuple>();
              try {
                pair[0](pair[1]);
              } catch (py::error_already_set& e) {
                e.discard_as_unraisable("omnibus Delivery done-callback");
              }
            });
          },
          py::arg("fn"),
          "Call fn(delivery) once all results are in: at once if they already are, else on the engine thread "
          "that reports the last one (keep it short; exceptions are reported as unraisable).")
      .def("__repr__", [](const PyDelivery& d) {
        return "<omnibus.Delivery messages=" + std::to_string(d.tracker->size()) +
               (d.tracker->done() ? " done>" : " pending>");
      });
}

}  // namespace omnibus::bind
