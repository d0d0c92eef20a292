// omnibus._core: the C++ measuring pieces behind omnibus.bench.
#include "common.hpp"

#include <string_view>
#include <vector>

#include "omnibus/bench.hpp"

namespace omnibus::bind {

namespace {
// Holds Py_buffers of a batch of payloads while C++ reads them.
class Buffers {
 public:
  explicit Buffers(py::handle items) {
    for (auto item : py::reinterpret_borrow<py::iterable>(items)) {
      Py_buffer view;
      if (PyObject_GetBuffer(item.ptr(), &view, PyBUF_SIMPLE) != 0) throw py::error_already_set();
      views_.push_back(view);
    }
  }
  ~Buffers() {
    for (auto& v : views_) PyBuffer_Release(&v);
  }
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;
  std::vector<std::string_view> payloads() const {
    std::vector<std::string_view> out;
    out.reserve(views_.size());
    for (const auto& v : views_) out.emplace_back(static_cast<const char*>(v.buf), std::size_t(v.len));
    return out;
  }

 private:
  std::vector<Py_buffer> views_;
};

py::list percentiles(const bench::LatencyHistogram& h, const std::vector<double>& ps) {
  py::list out;
  for (double p : ps) out.append(h.percentile(p));
  return out;
}
}  // namespace

void export_bench(py::module_& m) {
  using bench::DeliveryRecorder;
  using bench::LatencyHistogram;
  py::class_<LatencyHistogram>(m, "LatencyHistogram",
                               "Log-linear histogram of nanosecond values (within 0.8 %). Not thread-safe.")
      .def(py::init<>())
      .def("record", &LatencyHistogram::record, py::arg("ns"), py::arg("count") = 1)
      .def("merge", &LatencyHistogram::merge, py::arg("other"))
      .def("reset", &LatencyHistogram::reset)
      .def_property_readonly("count", &LatencyHistogram::count)
      .def_property_readonly("min", &LatencyHistogram::min)
      .def_property_readonly("max", &LatencyHistogram::max)
      .def_property_readonly("mean", &LatencyHistogram::mean)
      .def("percentile", [](const LatencyHistogram& h, double p) {
        if (!(p >= 0 && p <= 100))
          raise(Error(ErrorCode::InvalidArgument, "percentile must be between 0 and 100, got " + std::to_string(p)));
        return h.percentile(p);
      }, py::arg("p"))
      .def("percentiles", [](const LatencyHistogram& h, const std::vector<double>& ps) {
        for (double p : ps)
          if (!(p >= 0 && p <= 100))
            raise(Error(ErrorCode::InvalidArgument, "percentiles must be between 0 and 100, got " + std::to_string(p)));
        return percentiles(h, ps);
      }, py::arg("ps"));

  py::class_<DeliveryRecorder>(m, "DeliveryRecorder",
                               "Latency, loss and duplicates of benchmark payloads. Thread-safe.")
      .def(py::init<std::uint64_t>(), py::arg("expected"))
      .def("record", [](DeliveryRecorder& r, py::handle payloads) {
        const std::int64_t now = bench::monotonic_ns();  // the moment the batch reached Python
        Buffers buffers(payloads);
        auto views = buffers.payloads();
        py::gil_scoped_release release;
        r.record(views, now);
      }, py::arg("payloads"), "Record a batch of received payloads (Messages, bytes, ...) as received now.")
      .def_property_readonly("expected", &DeliveryRecorder::expected)
      .def_property_readonly("received", &DeliveryRecorder::received)
      .def_property_readonly("unique", &DeliveryRecorder::unique)
      .def_property_readonly("duplicates", &DeliveryRecorder::duplicates)
      .def_property_readonly("foreign", &DeliveryRecorder::foreign)
      .def_property_readonly("missing", &DeliveryRecorder::missing)
      .def_property_readonly("first_ns", &DeliveryRecorder::first_ns)
      .def_property_readonly("last_ns", &DeliveryRecorder::last_ns)
      .def("histogram", &DeliveryRecorder::histogram);

  m.def("make_payloads", [](std::uint64_t first_seq, std::size_t n, std::size_t size, std::int64_t t0_ns,
                            std::int64_t interval_ns) {
    if (size < bench::kHeaderBytes)
      raise(Error(ErrorCode::InvalidArgument, "benchmark payloads carry a " + std::to_string(bench::kHeaderBytes) +
                                                  "-byte header: size must be at least that, got " +
                                                  std::to_string(size)));
    py::list out(n);
    std::string buf;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t seq = first_seq + i;
      bench::stamp(buf, size, seq, t0_ns + std::int64_t(seq) * interval_ns);
      PyList_SET_ITEM(out.ptr(), Py_ssize_t(i), py::bytes(buf).release().ptr());
    }
    return out;
  }, py::arg("first_seq"), py::arg("n"), py::arg("size"), py::arg("t0_ns"), py::arg("interval_ns"),
     "n benchmark payloads of `size` bytes, sequence numbers from first_seq, each stamped with its intended "
     "send time t0_ns + seq * interval_ns (time.monotonic_ns() clock).");
}

}  // namespace omnibus::bind
