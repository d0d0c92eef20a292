// Python exception classes generated from cpp/include/omnibus/error_codes.def.
#include <vector>

#include "common.hpp"

namespace omnibus::bind {
namespace {
py::object g_base;                 // omnibus.Error
std::vector<py::object> g_classes; // indexed by ErrorCode
}  // namespace

py::object make_exception(const Error& e) {
  py::gil_scoped_acquire gil;
  py::object cls = g_classes.at(static_cast<std::size_t>(e.code()));
  py::object exc = cls(py::str(e.what()));
  exc.attr("native_code") = e.native_code();
  exc.attr("retryable") = e.retryable();
  return exc;
}

void raise_object(py::object exc) {
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw py::error_already_set();
}

void raise(const Error& e) { raise_object(make_exception(e)); }

std::optional<ErrorCode> error_code_of(py::handle exc) {
  // Most derived first is not needed: the classes are siblings under
  // omnibus.Error, so at most one matches (a subclass of one matches it).
  for (std::size_t i = 0; i < g_classes.size(); ++i)
    if (PyObject_IsInstance(exc.ptr(), g_classes[i].ptr()) == 1) return static_cast<ErrorCode>(i);
  return std::nullopt;
}

void export_errors(py::module_& m) {
  py::module_ builtins = py::module_::import("builtins");
  py::dict ns;
  g_base = py::reinterpret_steal<py::object>(PyErr_NewExceptionWithDoc(
      "omnibus.Error",
      "Base class of every omnibus error. Attributes: native_code (the wrapped "
      "library's code, 0 if none) and retryable (whether retrying may succeed).",
      PyExc_Exception, nullptr));
  g_base.attr("native_code") = 0;
  g_base.attr("retryable") = false;
  m.attr("Error") = g_base;

  std::size_t count = 0;
  const ErrorInfo* table = error_table(&count);
  py::list rows;
  for (std::size_t i = 0; i < count; ++i) {
    const auto& info = table[i];
    py::tuple bases = std::string(info.python_base).empty()
                          ? py::tuple(py::make_tuple(g_base))
                          : py::tuple(py::make_tuple(g_base, builtins.attr(info.python_base)));
    std::string qualified = std::string("omnibus.") + info.python_name;
    py::object cls = py::reinterpret_steal<py::object>(
        PyErr_NewExceptionWithDoc(qualified.c_str(), info.doc, bases.ptr(), nullptr));
    cls.attr("retryable") = info.retryable;
    m.attr(info.python_name) = cls;
    g_classes.push_back(cls);
    rows.append(py::make_tuple(info.name, info.python_name, info.python_base, info.retryable, info.doc));
  }
  m.attr("ERROR_TABLE") = rows;

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      py::object exc = make_exception(e);
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    }
  });
  // The classes live as long as the interpreter; release our references at exit.
  py::module_::import("atexit").attr("register")(py::cpp_function([] {
    g_classes.clear();
    g_base = py::object();
  }));
}

}  // namespace omnibus::bind
