// omnibus._core: a thin init; each exposed class lives in its own file.
#include "common.hpp"

namespace omnibus::bind {
void export_errors(py::module_& m);
void export_codecs(py::module_& m);
void export_message(py::module_& m);
void export_delivery(py::module_& m);
void export_publisher(py::module_& m);
void export_subscriber(py::module_& m);
void export_registry(py::module_& m);
void export_bench(py::module_& m);
void export_bridge(py::module_& m);
void export_py_drivers(py::module_& m);
void export_notifier(py::module_& m);
}  // namespace omnibus::bind

PYBIND11_MODULE(_core, m) {
  m.doc() = "omnibus C++ engine (see the omnibus package for the documented API)";
  using namespace omnibus::bind;
  export_errors(m);
  export_codecs(m);
  export_message(m);
  export_delivery(m);
  export_publisher(m);
  export_subscriber(m);
  export_registry(m);
  export_bench(m);
  export_bridge(m);
  export_py_drivers(m);
  export_notifier(m);
}
