// Codecs as seen from Python, and the conversions they need.
#include <cmath>

#include "common.hpp"

namespace omnibus::bind {

std::optional<Clock::duration> to_timeout(std::optional<double> seconds, const char* what) {
  if (!seconds) return std::nullopt;
  if (std::isnan(*seconds) || *seconds < 0)
    throw Error(ErrorCode::InvalidArgument,
                std::string(what) + " must be a number of seconds >= 0 or None (wait forever), got " +
                    std::to_string(*seconds));
  if (*seconds > 1e9) return std::nullopt;
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(*seconds));
}

std::string to_bytes(py::handle v, const char* what) {
  if (PyBytes_Check(v.ptr())) return std::string(PyBytes_AS_STRING(v.ptr()), PyBytes_GET_SIZE(v.ptr()));
  if (PyUnicode_Check(v.ptr())) {
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(v.ptr(), &n);
    if (!s) throw py::error_already_set();
    return std::string(s, static_cast<std::size_t>(n));
  }
  if (PyObject_CheckBuffer(v.ptr())) {
    py::buffer_info info = py::reinterpret_borrow<py::buffer>(v).request();
    if (info.ndim > 1 || info.itemsize != 1) {
      throw py::type_error(std::string(what) + " must be bytes, bytearray, memoryview of bytes or str");
    }
    return std::string(static_cast<const char*>(info.ptr), static_cast<std::size_t>(info.size));
  }
  throw py::type_error(std::string(what) + " must be bytes-like or str, got " +
                       std::string(py::str(py::type::handle_of(v).attr("__name__"))));
}

Value to_value(py::handle obj, bool allow_binary, int depth) {
  if (depth > 500) throw Error(ErrorCode::Codec, "value nests deeper than 500 levels (a cycle?)");
  PyObject* o = obj.ptr();
  if (o == Py_None) return Value(nullptr);
  if (PyBool_Check(o)) return Value(o == Py_True);
  if (PyLong_Check(o)) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) return Value(static_cast<std::int64_t>(v));
    if (overflow > 0) {
      unsigned long long u = PyLong_AsUnsignedLongLong(o);
      if (!PyErr_Occurred()) return Value(static_cast<std::uint64_t>(u));
      PyErr_Clear();
    }
    throw Error(ErrorCode::Codec, "int " + std::string(py::str(obj)) + " does not fit in 64 bits");
  }
  if (PyFloat_Check(o)) {
    double d = PyFloat_AS_DOUBLE(o);
    if (!std::isfinite(d)) throw Error(ErrorCode::Codec, "float " + std::string(py::str(obj)) + " has no JSON/MessagePack-portable form");
    return Value(d);
  }
  if (PyUnicode_Check(o)) {
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(o, &n);
    if (!s) {
      PyErr_Clear();
      throw Error(ErrorCode::Codec, "str is not encodable as UTF-8 (lone surrogate?)");
    }
    return Value(std::string(s, static_cast<std::size_t>(n)));
  }
  if (PyBytes_Check(o) || PyByteArray_Check(o) || PyMemoryView_Check(o)) {
    if (!allow_binary)
      throw Error(ErrorCode::Codec, "bytes have no JSON form; use codec='msgpack', or base64-encode them");
    std::string b = to_bytes(obj, "value");
    return Value::binary(std::vector<std::uint8_t>(b.begin(), b.end()));
  }
  if (PyList_Check(o) || PyTuple_Check(o)) {
    Value arr = Value::array();
    py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
    for (auto item : seq) arr.push_back(to_value(item, allow_binary, depth + 1));
    return arr;
  }
  if (PyDict_Check(o)) {
    Value object = Value::object();
    for (auto [k, v] : py::reinterpret_borrow<py::dict>(obj)) {
      if (!PyUnicode_Check(k.ptr()))
        throw Error(ErrorCode::Codec, "dict keys must be str, got " +
                                          std::string(py::str(py::type::handle_of(k).attr("__name__"))));
      object[k.cast<std::string>()] = to_value(v, allow_binary, depth + 1);
    }
    return object;
  }
  throw Error(ErrorCode::Codec, "values of type " + std::string(py::str(py::type::handle_of(obj).attr("__name__"))) +
                                    " are not serializable (expected None, bool, int, float, str, list, tuple, dict" +
                                    (allow_binary ? ", bytes)" : ")"));
}

py::object from_value(const Value& v) {
  switch (v.type()) {
    case Value::value_t::null: return py::none();
    case Value::value_t::boolean: return py::bool_(v.get<bool>());
    case Value::value_t::number_integer: return py::int_(v.get<std::int64_t>());
    case Value::value_t::number_unsigned: return py::int_(v.get<std::uint64_t>());
    case Value::value_t::number_float: return py::float_(v.get<double>());
    case Value::value_t::string: {
      const auto& s = v.get_ref<const std::string&>();
      return py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "strict"));
    }
    case Value::value_t::binary: {
      const auto& b = v.get_binary();
      return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
    }
    case Value::value_t::array: {
      py::list out;
      for (const auto& item : v) out.append(from_value(item));
      return std::move(out);
    }
    case Value::value_t::object: {
      py::dict out;
      for (auto it = v.begin(); it != v.end(); ++it) out[py::str(it.key())] = from_value(it.value());
      return std::move(out);
    }
    default: return py::none();
  }
}

std::shared_ptr<BoundCodec> BoundCodec::from_python(py::handle codec) {
  auto out = std::make_shared<BoundCodec>();
  if (py::isinstance<py::str>(codec)) {
    out->name_ = codec.cast<std::string>();
    out->native_ = builtin_codec(out->name_);  // InvalidArgument listing the names
    out->kind_ = out->name_ == "raw" ? Kind::Raw : out->name_ == "text" ? Kind::Text : Kind::Native;
    return out;
  }
  if (!py::hasattr(codec, "encode") || !py::hasattr(codec, "decode"))
    throw py::type_error("codec must be a codec name (str) or an object with encode(value) -> bytes and "
                         "decode(bytes) -> value methods, got " +
                         std::string(py::str(py::type::handle_of(codec).attr("__name__"))));
  out->kind_ = Kind::Python;
  out->py_ = py::reinterpret_borrow<py::object>(codec);
  out->name_ = py::hasattr(codec, "name") ? py::str(codec.attr("name")).cast<std::string>()
                                          : py::str(py::type::handle_of(codec).attr("__name__")).cast<std::string>();
  return out;
}

std::shared_ptr<py::object> share_with_threads(py::object obj) {
  return std::shared_ptr<py::object>(new py::object(std::move(obj)), [](py::object* o) {
    if (!Py_IsInitialized()) {
      o->release();
    } else {
      py::gil_scoped_acquire gil;
      *o = py::object();
    }
    delete o;
  });
}

BoundCodec::~BoundCodec() {
  // The last reference may drop on a C++ thread (a message kept by the
  // engine); Python objects may only be released with the GIL.
  if (py_ && Py_IsInitialized()) {
    py::gil_scoped_acquire gil;
    py_ = py::object();
  } else {
    py_.release();
  }
}

namespace {
[[noreturn]] void codec_failed(const std::string& codec, std::size_t index, const std::string& why) {
  throw Error(ErrorCode::Codec, "message " + std::to_string(index) + " of the batch: codec '" + codec +
                                    "' could not encode it: " + why);
}
std::string type_name(py::handle v) { return py::str(py::type::handle_of(v).attr("__name__")); }
}  // namespace

std::string BoundCodec::encode(py::handle value, std::size_t index) const {
  PyObject* o = value.ptr();
  switch (kind_) {
    case Kind::Raw:
      if (PyBytes_Check(o)) return std::string(PyBytes_AS_STRING(o), static_cast<std::size_t>(PyBytes_GET_SIZE(o)));
      if (PyByteArray_Check(o) || PyMemoryView_Check(o)) return to_bytes(value, "value");
      throw py::type_error("message " + std::to_string(index) + ": codec 'raw' takes bytes, bytearray or memoryview, got " +
                           type_name(value) + "; pass codec='text' for str, codec='json' or 'msgpack' for objects");
    case Kind::Text: {
      if (!PyUnicode_Check(o))
        throw py::type_error("message " + std::to_string(index) + ": codec 'text' takes str, got " + type_name(value));
      Py_ssize_t n = 0;
      const char* s = PyUnicode_AsUTF8AndSize(o, &n);
      if (!s) {
        PyErr_Clear();
        codec_failed(name_, index, "str is not encodable as UTF-8 (lone surrogate?)");
      }
      return std::string(s, static_cast<std::size_t>(n));
    }
    case Kind::Native:
      try {
        return native_->encode(to_value(value, name_ != "json"));
      } catch (const Error& e) {
        codec_failed(name_, index, e.what());
      }
    case Kind::Python: {
      py::object out;
      try {
        out = py_.attr("encode")(value);
      } catch (py::error_already_set& e) {
        if (e.matches(PyExc_KeyboardInterrupt)) throw;
        // Chain the codec's own exception as __cause__ of the CodecError.
        std::string why = std::string(py::str(e.type().attr("__name__"))) + ": " + std::string(py::str(e.value()));
        py::object cause = e.value();
        py::object exc = make_exception(Error(ErrorCode::Codec, "message " + std::to_string(index) +
                                                                    " of the batch: codec '" + name_ +
                                                                    "' could not encode it: " + why));
        exc.attr("__cause__") = cause;
        e.restore();
        PyErr_Clear();
        raise_object(exc);
      }
      if (!PyBytes_Check(out.ptr()) && !PyByteArray_Check(out.ptr()) && !PyMemoryView_Check(out.ptr()))
        codec_failed(name_, index, "encode() returned " + type_name(out) + ", expected bytes");
      return to_bytes(out, "encoded value");
    }
  }
  throw Error(ErrorCode::Internal, "unknown codec kind");
}

py::object BoundCodec::decode(const Message& msg) const {
  const std::string& p = msg.payload();
  switch (kind_) {
    case Kind::Raw: return py::bytes(p.data(), p.size());
    case Kind::Text: {
      PyObject* s = PyUnicode_DecodeUTF8(p.data(), static_cast<Py_ssize_t>(p.size()), "strict");
      if (!s) {
        PyErr_Clear();
        throw Error(ErrorCode::Codec, "codec 'text': payload of " + std::to_string(p.size()) +
                                          " bytes is not valid UTF-8; read msg.payload for the raw bytes");
      }
      return py::reinterpret_steal<py::object>(s);
    }
    case Kind::Native: return from_value(native_->decode(p));
    case Kind::Python:
      try {
        return py_.attr("decode")(py::bytes(p.data(), p.size()));
      } catch (py::error_already_set& e) {
        if (e.matches(PyExc_KeyboardInterrupt)) throw;
        std::string why = std::string(py::str(e.type().attr("__name__"))) + ": " + std::string(py::str(e.value()));
        throw Error(ErrorCode::Codec, "codec '" + name_ + "' could not decode the payload: " + why);
      }
  }
  throw Error(ErrorCode::Internal, "unknown codec kind");
}

void export_codecs(py::module_& m) {
  m.def("builtin_codecs", &builtin_codec_names, "Names of the codecs built into the C++ engine.");
  m.def(
      "decode",
      [](const std::string& codec, py::bytes payload) {
        // Outside a subscriber (checkers, tools): the same decoding a
        // subscriber's msg.value does for a built-in codec.
        auto c = builtin_codec(codec);  // InvalidArgument listing the names
        std::string_view p = payload;
        return from_value(c->decode(p));
      },
      py::arg("codec"), py::arg("payload"),
      "Decode payload bytes with a built-in codec (json, msgpack, ...); raises CodecError when they do not decode.");
}

}  // namespace omnibus::bind
