// Drivers written in Python: a Python object with the Driver contract of
// cpp/include/omnibus/driver.hpp (python/omnibus/driver.py documents it),
// wrapped as a C++ Driver so that batching, back-pressure, delivery results,
// acks and codecs stay in the engine. The engine calls into Python once per
// batch (send_batch, receive_batch, ack, nack), taking the GIL for that call
// only; no C++ lock is held while Python runs, so a driver that blocks holds
// up its own publisher or subscriber thread, never another one or the
// interpreter, and one that raises fails its batch with a mapped Error.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common.hpp"
#include "omnibus/driver.hpp"

namespace omnibus::bind {

namespace {

// An engine thread must not take the GIL once the interpreter shuts down:
// CPython ends such a thread inside our C++ frames. So an atexit hook (run
// before finalization, while everything is alive) closes the door to new
// calls and waits for the calls under way to leave Python (a poll returns
// within 100 ms; a driver blocked for good is given up on after 5 s).
std::atomic<bool> g_exiting{false};
std::atomic<int> g_inside{0};
std::mutex g_inside_mu;
std::condition_variable g_inside_cv;

bool python_gone() {
#if PY_VERSION_HEX >= 0x030D0000
  return g_exiting.load() || !Py_IsInitialized() || Py_IsFinalizing();
#else
  return g_exiting.load() || !Py_IsInitialized() || _Py_IsFinalizing();
#endif
}

// One call from the engine into Python: counted, then the GIL taken. Throws
// Closed when the interpreter is shutting down.
class PythonCall {
 public:
  explicit PythonCall(const std::string& scheme) {
    g_inside.fetch_add(1);
    if (python_gone()) {
      leave();
      throw Error(ErrorCode::Closed, "the " + scheme + ":// driver is written in Python, and the interpreter is shutting down");
    }
    gil_.emplace();
  }
  ~PythonCall() {
    gil_.reset();
    leave();
  }
  PythonCall(const PythonCall&) = delete;
  PythonCall& operator=(const PythonCall&) = delete;

 private:
  static void leave() {
    if (g_inside.fetch_sub(1) == 1) {
      std::lock_guard lock(g_inside_mu);
      g_inside_cv.notify_all();
    }
  }
  std::optional<py::gil_scoped_acquire> gil_;
};

void close_the_door_at_exit() {
  g_exiting.store(true);
  py::gil_scoped_release release;
  std::unique_lock lock(g_inside_mu);
  g_inside_cv.wait_for(lock, std::chrono::seconds(5), [] { return g_inside.load() == 0; });
}

// A Python object owned by C++ objects that may die on any thread (share_with_threads, minus the
// shutdown hazard): released with the GIL, or leaked once the interpreter is going away.
std::shared_ptr<py::object> share(py::object obj) {
  return std::shared_ptr<py::object>(new py::object(std::move(obj)), [](py::object* o) {
    bool released = false;
    if (!python_gone()) {
      try {
        PythonCall call("python");
        *o = py::object();
        released = true;
      } catch (const Error&) {
      }
    }
    if (!released) o->release();
    delete o;
  });
}

std::string type_name(py::handle v) { return py::str(py::type::handle_of(v).attr("__name__")); }

// The exception a Python driver raised, as an omnibus Error: an omnibus
// exception keeps its class (Unavailable stays Unavailable, and retryable);
// anything else is Internal, naming the driver and the method, with the
// traceback in the message (the exception object itself cannot cross to the
// thread that reports it). Needs the GIL.
Error from_python(py::error_already_set& e, const std::string& where) {
  py::object value = e.value();
  if (auto code = error_code_of(value)) {
    int native = 0;
    bool retryable = error_info(*code).retryable;
    try {
      native = py::int_(value.attr("native_code")).cast<int>();
      retryable = py::bool_(value.attr("retryable")).cast<bool>();
    } catch (py::error_already_set&) {
      // Attributes replaced by something odd: keep the class defaults.
    } catch (const py::cast_error&) {
    }
    return Error(*code, std::string(py::str(value)), native, retryable);
  }
  std::string text = where + " raised " + type_name(value) + ": " + std::string(py::str(value));
  try {
    py::object lines = py::module_::import("traceback").attr("format_exception")(e.type(), value, e.trace());
    text += "\n" + std::string(py::str(py::str("").attr("join")(lines)));
  } catch (py::error_already_set&) {
    // Without the traceback the message still names the driver and the error.
  }
  return Error(ErrorCode::Internal, text);
}

// Releases Python references held by an object that may die on an engine
// thread: with the GIL while the interpreter lives, else leaked (at exit).
template <class Fn>
void release_python(Fn&& clear) {
  if (python_gone()) return;  // the caller leaks what it holds (release())
  try {
    PythonCall call("python");
    clear();
  } catch (const Error&) {
    // Shutting down meanwhile: leaked, as above.
  }
}

Capabilities capabilities_from(py::handle obj, const std::string& where) {
  py::object d = obj.attr("capabilities")();
  if (!py::isinstance<py::dict>(d))
    throw Error(ErrorCode::Internal, where + ".capabilities() returned " + type_name(d) + ", expected a dict");
  Capabilities c;
  c.delivery_guarantee = "at-most-once";
  for (auto [k, v] : py::reinterpret_borrow<py::dict>(d)) {
    std::string name = py::str(k);
    auto flag = [&](bool& field) { field = py::bool_(py::reinterpret_borrow<py::object>(v)).cast<bool>(); };
    if (name == "delivery_guarantee") {
      c.delivery_guarantee = py::str(v);
      if (c.delivery_guarantee != "at-most-once" && c.delivery_guarantee != "at-least-once")
        throw Error(ErrorCode::Internal, where + ".capabilities(): delivery_guarantee must be 'at-most-once' or "
                                                 "'at-least-once', got " + printable(c.delivery_guarantee));
    } else if (name == "ordered_per_key") flag(c.ordered_per_key);
    else if (name == "key_affinity") flag(c.key_affinity);
    else if (name == "keys") flag(c.keys);
    else if (name == "nack") flag(c.nack);
    else if (name == "ack_deadline") flag(c.ack_deadline);
    else if (name == "requeue_on_close") flag(c.requeue_on_close);
    else if (name == "delivery_count") flag(c.delivery_count);
    else if (name == "competing_consumers") flag(c.competing_consumers);
    else if (name == "headers") flag(c.headers);
    else if (name == "dead_letter") flag(c.dead_letter);
    else if (name == "durable") flag(c.durable);
    else if (name == "max_message_bytes") c.max_message_bytes = py::int_(py::reinterpret_borrow<py::object>(v)).cast<std::size_t>();
    else if (name == "request_reply") {
      if (py::bool_(py::reinterpret_borrow<py::object>(v)).cast<bool>())
        throw Error(ErrorCode::Unsupported, where + ".capabilities(): request_reply is not available to Python drivers");
    } else {
      throw Error(ErrorCode::Internal,
                  where + ".capabilities(): unknown capability " + printable(name) +
                      "; known: delivery_guarantee, ordered_per_key, key_affinity, keys, nack, ack_deadline, "
                      "requeue_on_close, delivery_count, competing_consumers, headers, dead_letter, durable, "
                      "max_message_bytes");
    }
  }
  return c;
}

std::optional<bool> connected_of(const std::shared_ptr<py::object>& obj, const std::string& scheme) {
  try {
    PythonCall call(scheme);
    if (!py::hasattr(*obj, "connected")) return true;
    py::object v = obj->attr("connected");
    if (v.is_none()) return std::nullopt;
    return py::bool_(v).cast<bool>();
  } catch (py::error_already_set&) {
    return std::nullopt;  // a property that raises cannot tell
  } catch (const Error&) {
    return std::nullopt;  // shutting down
  }
}

py::object options_to_python(const OptionValues& values, const std::vector<OptionSpec>& own) {
  py::dict d;
  for (const auto& spec : own) {
    auto it = values.values().find(spec.name);
    if (it == values.values().end()) continue;
    std::visit([&](const auto& v) { d[py::str(spec.name)] = py::cast(v); }, it->second);
  }
  return std::move(d);
}

py::object url_to_python(const Url& u) {
  py::dict d = url_to_dict(u);
  d["text"] = u.text;  // password masked: safe for errors and logs
  return std::move(d);
}

// ---------------------------------------------------------------- sender

// Calls a driver's sender or receiver close() once, with the GIL, after
// `first` (also under the GIL); nothing at interpreter shutdown, when the
// driver's connections end with the process.
template <class First>
void close_python_side(py::object& side, const std::string& scheme, const char* what, First&& first) {
  std::optional<PythonCall> call;
  try {
    call.emplace(scheme);
  } catch (const Error&) {
    return;
  }
  first();
  try {
    side.attr("close")();
  } catch (py::error_already_set& e) {
    throw from_python(e, scheme + ":// driver's " + what + " close() (Python)");
  }
}

class PySender final : public Sender {
 public:
  PySender(std::string scheme, py::object obj, Capabilities caps)
      : scheme_(std::move(scheme)), obj_(share(std::move(obj))), caps_(std::move(caps)) {}

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    const std::string where = scheme_ + ":// driver's send_batch (Python)";
    std::vector<std::optional<Error>> errors(batch.size());
    std::optional<Error> all;
    try {
      PythonCall call(scheme_);
      try {
        py::list msgs(batch.size());
        for (std::size_t i = 0; i < batch.size(); ++i) {
          const auto& m = batch[i];
          py::list headers(m.headers.size());
          for (std::size_t h = 0; h < m.headers.size(); ++h)
            headers[h] = py::make_tuple(py::str(m.headers[h].first), py::bytes(m.headers[h].second));
          msgs[i] = py::make_tuple(py::bytes(*m.payload), m.key ? py::object(py::bytes(*m.key)) : py::object(py::none()),
                                   std::move(headers), m.timestamp_ms);
        }
        py::object result = obj_->attr("send_batch")(std::move(msgs));
        if (!result.is_none()) {
          if (!py::isinstance<py::list>(result) && !py::isinstance<py::tuple>(result))
            throw Error(ErrorCode::Internal, where + " returned " + type_name(result) +
                                                 "; expected None (all sent) or a list of one error or None per message");
          py::sequence seq = py::reinterpret_borrow<py::sequence>(result);
          if (seq.size() != batch.size())
            throw Error(ErrorCode::Internal, where + " returned " + std::to_string(seq.size()) + " results for " +
                                                 std::to_string(batch.size()) + " messages");
          for (std::size_t i = 0; i < batch.size(); ++i) {
            py::object r = seq[i];
            if (r.is_none()) continue;
            if (!PyExceptionInstance_Check(r.ptr()))
              throw Error(ErrorCode::Internal, where + " returned " + type_name(r) + " for message " + std::to_string(i) +
                                                   "; expected None or an exception");
            PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(r.ptr())), r.ptr());
            py::error_already_set e;
            errors[i] = from_python(e, where + " for message " + std::to_string(i));
          }
        }
      } catch (py::error_already_set& e) {
        all = from_python(e, where);
      }
    } catch (const Error& e) {
      all = e;
    }
    // Results are reported without the GIL: delivery callbacks take locks of
    // their own, and a Python one takes the GIL itself.
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const Error* err = all ? &*all : errors[i] ? &*errors[i] : nullptr;
      on_result(i, err);
    }
  }

  Capabilities capabilities() const override { return caps_; }
  std::optional<bool> connected() const override { return connected_of(obj_, scheme_); }

  void close() override {
    if (!closed_.exchange(true)) close_python_side(*obj_, scheme_, "sender", [] {});
  }

 private:
  std::string scheme_;
  std::shared_ptr<py::object> obj_;
  Capabilities caps_;
  std::atomic<bool> closed_{false};
};

// ---------------------------------------------------------------- receiver

class PyReceiver final : public Receiver, public std::enable_shared_from_this<PyReceiver> {
 public:
  PyReceiver(std::string scheme, py::object obj, Capabilities caps)
      : scheme_(std::move(scheme)), obj_(share(std::move(obj))), caps_(std::move(caps)) {}

  ~PyReceiver() override {
    if (python_gone()) {
      for (auto& [_, id] : ids_) id.release();  // the interpreter is gone: leak, do not crash
      return;
    }
    release_python([&] { ids_.clear(); });
  }

  std::vector<MessagePtr> receive_batch(std::size_t max, std::chrono::milliseconds timeout) override {
    const std::string where = scheme_ + ":// driver's receive_batch (Python)";
    std::vector<MessagePtr> out;
    bool retry_later = false;
    {
      PythonCall call(scheme_);
      if (closed_) throw Error(ErrorCode::Closed, "the " + scheme_ + ":// receiver is closed");
      py::object got;
      try {
        got = obj_->attr("receive_batch")(max, static_cast<double>(timeout.count()) / 1000.0);
      } catch (py::error_already_set& e) {
        Error err = from_python(e, where);
        // A broker that is away (Unavailable, Timeout) is waited out here, as
        // the native drivers reconnect by themselves: the subscriber goes on
        // polling and `connected` says what the driver says.
        if (!err.retryable()) throw err;
        retry_later = true;
      }
      if (!retry_later) {
        if (got.is_none()) return out;
        if (!py::isinstance<py::list>(got) && !py::isinstance<py::tuple>(got))
          throw Error(ErrorCode::Internal, where + " returned " + type_name(got) + "; expected a list of omnibus.driver.Received");
        py::sequence seq = py::reinterpret_borrow<py::sequence>(got);
        if (seq.size() > max)
          throw Error(ErrorCode::Internal, where + " returned " + std::to_string(seq.size()) + " messages; at most " +
                                               std::to_string(max) + " were asked for");
        out.reserve(seq.size());
        auto self = shared_from_this();
        for (std::size_t i = 0; i < seq.size(); ++i) out.push_back(to_message(seq[i], i, where, self));
      }
    }
    if (retry_later) std::this_thread::sleep_for(std::min(timeout, std::chrono::milliseconds(100)));
    return out;
  }

  void ack(const std::vector<std::uint64_t>& ack_ids) override { settle(ack_ids, "ack"); }

  void nack(const std::vector<std::uint64_t>& ack_ids) override {
    if (!caps_.nack)
      throw Error(ErrorCode::Unsupported, "the " + scheme_ + ":// driver cannot nack (capabilities()['nack'] is False)");
    settle(ack_ids, "nack");
  }

  Capabilities capabilities() const override { return caps_; }
  std::optional<bool> connected() const override { return connected_of(obj_, scheme_); }

  void close() override {
    if (closed_.exchange(true)) return;
    // Messages not settled stay with the broker, for the driver's own redelivery.
    close_python_side(*obj_, scheme_, "receiver", [this] { ids_.clear(); });
  }

 private:
  MessagePtr to_message(py::handle item, std::size_t i, const std::string& where, const std::shared_ptr<PyReceiver>& self) {
    // (ack_id, payload, key, headers, timestamp_ms, delivery_attempt, topic); all but the first two optional.
    if (!py::isinstance<py::tuple>(item) && !py::isinstance<py::list>(item))
      throw Error(ErrorCode::Internal, where + " returned " + type_name(item) + " as message " + std::to_string(i) +
                                           "; expected omnibus.driver.Received (or a tuple in its order)");
    py::sequence t = py::reinterpret_borrow<py::sequence>(item);
    const std::size_t n = t.size();
    if (n < 2 || n > 7)
      throw Error(ErrorCode::Internal, where + ": message " + std::to_string(i) + " has " + std::to_string(n) +
                                           " fields; expected (ack_id, payload[, key, headers, timestamp_ms, delivery_attempt, topic])");
    try {
      OutMessage data;
      data.payload = make_bytes(to_bytes(t[1], "payload"));
      if (n > 2 && !t[2].is_none()) data.key = to_bytes(t[2], "key");
      if (n > 3 && !t[3].is_none())
        for (auto h : py::reinterpret_borrow<py::iterable>(t[3])) {
          py::sequence pair = py::reinterpret_borrow<py::sequence>(h);
          data.headers.emplace_back(to_bytes(pair[0], "header name"), to_bytes(pair[1], "header value"));
        }
      if (n > 4 && !t[4].is_none()) data.timestamp_ms = py::int_(t[4]).cast<std::int64_t>();
      std::uint32_t attempt = n > 5 && !t[5].is_none() ? py::int_(t[5]).cast<std::uint32_t>() : 1;
      std::string topic = n > 6 && !t[6].is_none() ? std::string(py::str(t[6])) : std::string();
      const std::uint64_t id = next_id_++;
      ids_.emplace(id, py::reinterpret_borrow<py::object>(t[0]));
      return std::make_shared<Message>(std::move(data), std::move(topic), attempt ? attempt : 1, self, id);
    } catch (py::error_already_set& e) {
      throw from_python(e, where + ", message " + std::to_string(i));
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {  // py::cast_error, py::type_error from to_bytes
      throw Error(ErrorCode::Internal, where + ": message " + std::to_string(i) + ": " + e.what());
    }
  }

  void settle(const std::vector<std::uint64_t>& ack_ids, const char* method) {
    PythonCall call(scheme_);
    if (closed_) throw Error(ErrorCode::Closed, "the " + scheme_ + ":// receiver is closed");
    py::list ids;
    for (auto id : ack_ids) {
      auto it = ids_.find(id);
      if (it == ids_.end()) continue;  // already settled: ignored, as the contract says
      ids.append(std::move(it->second));
      ids_.erase(it);
    }
    if (ids.empty()) return;
    try {
      obj_->attr(method)(std::move(ids));
    } catch (py::error_already_set& e) {
      throw from_python(e, scheme_ + ":// driver's " + method + " (Python)");
    }
  }

  std::string scheme_;
  std::shared_ptr<py::object> obj_;
  Capabilities caps_;
  std::atomic<bool> closed_{false};
  // The driver's own ids (e.g. Redis stream entry ids) by engine ack id.
  // Touched with the GIL held only, which is what guards it.
  std::unordered_map<std::uint64_t, py::object> ids_;
  std::uint64_t next_id_ = 1;
};

// ---------------------------------------------------------------- driver

OptionType option_type(const std::string& name, const std::string& scheme) {
  if (name == "bool") return OptionType::Bool;
  if (name == "int") return OptionType::Int;
  if (name == "float") return OptionType::Float;
  if (name == "str") return OptionType::String;
  if (name == "choice") return OptionType::Choice;
  throw Error(ErrorCode::InvalidArgument, scheme + ":// driver: option type " + printable(name) +
                                              " is not one of bool, int, float, str, choice");
}

std::vector<OptionSpec> specs_from(py::handle list, const std::string& scheme) {
  std::vector<OptionSpec> out;
  for (auto item : py::reinterpret_borrow<py::iterable>(list)) {
    OptionSpec s;
    s.name = py::str(item.attr("name"));
    s.type = option_type(py::str(item.attr("type")), scheme);
    s.default_value = py::str(item.attr("default"));
    s.doc = py::str(item.attr("doc"));
    for (auto c : py::reinterpret_borrow<py::iterable>(item.attr("choices"))) s.choices.push_back(py::str(c));
    py::object lo = item.attr("min"), hi = item.attr("max");
    if (!lo.is_none()) s.min = py::int_(lo).cast<std::int64_t>();
    if (!hi.is_none()) s.max = py::int_(hi).cast<std::int64_t>();
    out.push_back(std::move(s));
  }
  return out;
}

class PyDriver final : public Driver {
 public:
  PyDriver(std::string scheme, py::object obj, std::string description, std::vector<OptionSpec> sender,
           std::vector<OptionSpec> receiver)
      : scheme_(std::move(scheme)),
        obj_(share(std::move(obj))),
        description_(std::move(description)),
        sender_options_(std::move(sender)),
        receiver_options_(std::move(receiver)) {}

  std::string scheme() const override { return scheme_; }
  std::string description() const override { return description_; }
  std::vector<OptionSpec> sender_options() const override { return sender_options_; }
  std::vector<OptionSpec> receiver_options() const override { return receiver_options_; }
  const std::shared_ptr<py::object>& object() const { return obj_; }

  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    PythonCall call(scheme_);
    const std::string where = scheme_ + ":// driver's open_sender (Python)";
    try {
      py::object s = obj_->attr("open_sender")(url_to_python(url), options_to_python(options, sender_options_));
      check_methods(s, {"send_batch", "capabilities", "close"}, where);
      auto caps = capabilities_from(s, where + " -> sender");
      return std::make_shared<PySender>(scheme_, std::move(s), std::move(caps));
    } catch (py::error_already_set& e) {
      throw from_python(e, where);
    }
  }

  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options,
                                          const ReceiverSettings& settings) override {
    PythonCall call(scheme_);
    const std::string where = scheme_ + ":// driver's open_receiver (Python)";
    try {
      py::dict st;
      st["manual_ack"] = settings.manual_ack;
      py::object r = obj_->attr("open_receiver")(url_to_python(url), options_to_python(options, receiver_options_), st);
      check_methods(r, {"receive_batch", "ack", "nack", "capabilities", "close"}, where);
      auto caps = capabilities_from(r, where + " -> receiver");
      return std::make_shared<PyReceiver>(scheme_, std::move(r), std::move(caps));
    } catch (py::error_already_set& e) {
      throw from_python(e, where);
    }
  }

 private:
  static void check_methods(py::handle obj, std::initializer_list<const char*> names, const std::string& where) {
    for (const char* n : names)
      if (!py::hasattr(obj, n) || !PyCallable_Check(obj.attr(n).ptr()))
        throw Error(ErrorCode::Internal, where + " returned " + type_name(obj) + ", which has no " + n + "() method");
  }

  std::string scheme_;
  std::shared_ptr<py::object> obj_;
  std::string description_;
  std::vector<OptionSpec> sender_options_;
  std::vector<OptionSpec> receiver_options_;
};

}  // namespace

void export_py_drivers(py::module_& m) {
  py::module_::import("atexit").attr("register")(py::cpp_function(&close_the_door_at_exit));
  m.def(
      "register_driver",
      [](const std::string& scheme, py::object driver, const std::string& description, py::object sender_options,
         py::object receiver_options, bool replace) {
        auto& reg = DriverRegistry::instance();
        auto d = std::make_shared<PyDriver>(scheme, driver, description, specs_from(sender_options, scheme),
                                            specs_from(receiver_options, scheme));
        if (replace) {
          auto schemes = reg.schemes();
          if (std::find(schemes.begin(), schemes.end(), scheme) != schemes.end()) {
            if (!std::dynamic_pointer_cast<PyDriver>(reg.get(scheme)))
              throw Error(ErrorCode::InvalidArgument, scheme + ":// is a built-in driver; it cannot be replaced");
            reg.remove(scheme);
          }
        }
        reg.add(std::move(d));
      },
      py::arg("scheme"), py::arg("driver"), py::arg("description"), py::arg("sender_options"),
      py::arg("receiver_options"), py::arg("replace") = false,
      "Register a driver written in Python (use omnibus.register_driver, which checks it first).");
  m.def(
      "unregister_driver",
      [](const std::string& scheme) {
        auto& reg = DriverRegistry::instance();
        auto schemes = reg.schemes();
        if (std::find(schemes.begin(), schemes.end(), scheme) == schemes.end()) return false;
        if (!std::dynamic_pointer_cast<PyDriver>(reg.get(scheme)))
          throw Error(ErrorCode::InvalidArgument, scheme + ":// is a built-in driver; it cannot be unregistered");
        reg.remove(scheme);
        return true;
      },
      py::arg("scheme"), "Remove a driver registered from Python; False when there was none.");
  m.def(
      "python_driver",
      [](const std::string& scheme) -> py::object {
        auto schemes = DriverRegistry::instance().schemes();
        if (std::find(schemes.begin(), schemes.end(), scheme) == schemes.end()) return py::none();
        auto d = std::dynamic_pointer_cast<PyDriver>(DriverRegistry::instance().get(scheme));
        return d ? *d->object() : py::none();
      },
      py::arg("scheme"), "The Python object behind a registered Python driver, None for a built-in one.");
}

}  // namespace omnibus::bind
