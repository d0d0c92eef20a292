// omnibus.Publisher
#include "delivery.hpp"
#include "message.hpp"
#include "notifier.hpp"

namespace omnibus::bind {

Headers to_headers(py::handle h, std::size_t index) {
  Headers out;
  if (h.is_none()) return out;
  auto add = [&](py::handle k, py::handle v) {
    if (!PyUnicode_Check(k.ptr()))
      throw py::type_error("message " + std::to_string(index) + ": header names must be str");
    out.emplace_back(k.cast<std::string>(), to_bytes(v, "header value"));
  };
  if (PyDict_Check(h.ptr())) {
    for (auto [k, v] : py::reinterpret_borrow<py::dict>(h)) add(k, v);
    return out;
  }
  if (PyList_Check(h.ptr()) || PyTuple_Check(h.ptr())) {
    for (auto item : py::reinterpret_borrow<py::sequence>(h)) {
      if (!PyTuple_Check(item.ptr()) || PyTuple_GET_SIZE(item.ptr()) != 2)
        throw py::type_error("message " + std::to_string(index) +
                             ": headers as a list must hold (name, value) pairs");
      add(PyTuple_GET_ITEM(item.ptr(), 0), PyTuple_GET_ITEM(item.ptr(), 1));
    }
    return out;
  }
  throw py::type_error("message " + std::to_string(index) +
                       ": headers must be a dict {name: bytes|str} or a list of (name, bytes|str) pairs");
}

namespace {

struct PyPublisher {
  std::shared_ptr<Publisher> pub;
  std::shared_ptr<BoundCodec> codec;
  ~PyPublisher() {
    // Closing may wait for the engine thread, which may need the GIL to run
    // delivery callbacks: never wait holding it.
    if (pub && Py_IsInitialized() && PyGILState_Check()) {
      py::gil_scoped_release release;
      pub.reset();
    }
  }
};

// A request in flight for omnibus.aio: the notifier gets `token` once poll()
// would not block, so that the event loop waits on its fd, not on a thread.
struct PyPendingRequest {
  std::unique_ptr<PendingReply> pending;
  std::shared_ptr<Publisher> pub;
  std::shared_ptr<BoundCodec> codec;
};

struct PyUndelivered {
  py::bytes payload;
  py::object key;
  py::list headers;
  py::object error;
};

OutMessage make_message(const PyPublisher& p, py::handle value, py::handle key, py::handle headers,
                        std::size_t index) {
  OutMessage m;
  m.payload = make_bytes(p.codec->encode(value, index));
  if (!key.is_none()) m.key = to_bytes(key, "key");
  if (!headers.is_none()) m.headers = to_headers(headers, index);
  return m;
}

// Enqueues every message, blocking (GIL released, interruptible) while the
// queue is full, up to the publisher's block_timeout_ms. Messages that could
// not be enqueued are failed in the tracker before the error is raised.
void enqueue_all(PyPublisher& p, std::vector<OutMessage>& msgs, const std::shared_ptr<DeliveryTracker>& tracker,
                 std::optional<double> block_timeout) {
  const std::optional<Clock::duration> limit =
      block_timeout ? to_timeout(block_timeout, "block_timeout") : Clock::duration(p.pub->config().block_timeout);
  const std::size_t n = msgs.size();
  std::size_t done;
  if (n < 64) {
    done = p.pub->enqueue(msgs, 0, tracker, 0, Clock::duration::zero());
  } else {
    // Let other Python threads (a subscriber, say) run while a big batch is queued.
    py::gil_scoped_release release;
    done = p.pub->enqueue(msgs, 0, tracker, 0, Clock::duration::zero());
  }
  if (done == n) return;
  bool ok;
  try {
    ok = wait_interruptible(limit, [&](Clock::duration slice) {
      done += p.pub->enqueue(msgs, done, tracker, done, slice);
      return done == n;
    });
  } catch (py::error_already_set&) {
    tracker->fail_rest(done, Error(ErrorCode::Timeout, "publish was interrupted before this message was enqueued"));
    throw;
  } catch (const Error& e) {
    tracker->fail_rest(done, e);  // enqueue throws only when it queued nothing in that call
    throw;
  }
  if (!ok && p.pub->closed()) {
    Error err(ErrorCode::Closed, "publisher for " + p.pub->url() + " was closed while publishing; messages " +
                                     std::to_string(done) + ".." + std::to_string(n - 1) + " of this call were not enqueued");
    tracker->fail_rest(done, err);
    raise(err);
  }
  if (!ok) {
    Error err(ErrorCode::ResourceExhausted,
              "publish queue of " + p.pub->url() + " stayed full (max_pending=" +
                  std::to_string(p.pub->config().max_pending) + ") for " +
                  std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(limit.value_or(Clock::duration::zero())).count()) + " ms; messages " + std::to_string(done) +
                  ".." + std::to_string(n - 1) + " of this call were not enqueued (earlier ones were)");
    tracker->fail_rest(done, err);
    raise(err);
  }
}

py::dict capabilities_to_python(const Capabilities& c) {
  py::dict d;
  d["delivery_guarantee"] = c.delivery_guarantee;
  d["ordered_per_key"] = c.ordered_per_key;
  d["key_affinity"] = c.key_affinity;
  d["keys"] = c.keys;
  d["nack"] = c.nack;
  d["requeue_on_close"] = c.requeue_on_close;
  d["delivery_count"] = c.delivery_count;
  d["ack_deadline"] = c.ack_deadline;
  d["competing_consumers"] = c.competing_consumers;
  d["fan_out"] = c.fan_out;
  d["headers"] = c.headers;
  d["dead_letter"] = c.dead_letter;
  d["durable"] = c.durable;
  d["request_reply"] = c.request_reply;
  d["max_message_bytes"] = c.max_message_bytes;
  return d;
}

void attach_callback(py::object delivery, py::object on_delivery) {
  if (!on_delivery.is_none()) delivery.attr("add_done_callback")(on_delivery);
}

}  // namespace

py::dict capabilities_dict(const Capabilities& c) { return capabilities_to_python(c); }

void export_publisher(py::module_& m) {
  py::class_<PyPendingRequest>(m, "_PendingRequest", "A request in flight (omnibus.aio)")
      .def(
          "poll",
          [](PyPendingRequest& r) -> py::object {
            if (!r.pending) throw Error(ErrorCode::Closed, "the request was abandoned");
            MessagePtr reply = r.pending->wait(std::chrono::milliseconds(0));
            if (!reply) return py::none();
            return py::cast(PyMessage{std::move(reply), r.codec});
          },
          "The reply decoded as a Message, None when none came yet; raises like Publisher.request().")
      .def(
          "timeout_error",
          [](PyPendingRequest& r, double seconds) {
            return make_exception(
                r.pub->request_timeout(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds))));
          },
          py::arg("seconds"), "The Timeout that Publisher.request() raises after waiting `seconds`.")
      .def(
          "abandon",
          [](PyPendingRequest& r) {
            py::gil_scoped_release release;
            r.pending.reset();
          },
          "Drop the request: a later reply is discarded. Idempotent.");

  py::class_<PyUndelivered>(m, "Undelivered", "A message that close() could not deliver, and why.")
      .def_readonly("payload", &PyUndelivered::payload)
      .def_readonly("key", &PyUndelivered::key)
      .def_readonly("headers", &PyUndelivered::headers)
      .def_readonly("error", &PyUndelivered::error)
      .def("__repr__", [](const PyUndelivered& u) {
        return "<omnibus.Undelivered bytes=" + std::to_string(py::len(u.payload)) + " error=" +
               std::string(py::repr(u.error)) + ">";
      });

  py::class_<PyPublisher>(m, "Publisher",
                          "Publishes to one URL. Thread-safe: several threads may publish at once. "
                          "Create with omnibus.publisher(url, codec=..., **options).")
      .def(py::init([](const std::string& url, const std::vector<std::pair<std::string, std::string>>& options,
                       py::object codec) {
             auto bound = BoundCodec::from_python(codec);
             std::shared_ptr<Publisher> pub;
             {
               py::gil_scoped_release release;  // the driver may connect
               pub = Publisher::open(url, options);
             }
             return PyPublisher{std::move(pub), std::move(bound)};
           }),
           py::arg("url"), py::arg("options") = std::vector<std::pair<std::string, std::string>>{},
           py::arg("codec") = "raw")
      .def(
          "publish",
          [](PyPublisher& p, py::handle value, py::handle key, py::handle headers, std::optional<std::int64_t> timestamp_ms,
             py::object on_delivery, std::optional<double> block_timeout) {
            std::vector<OutMessage> msgs;
            msgs.push_back(make_message(p, value, key, headers, 0));
            if (timestamp_ms) msgs[0].timestamp_ms = *timestamp_ms;
            auto tracker = std::make_shared<DeliveryTracker>(1);
            enqueue_all(p, msgs, tracker, block_timeout);
            py::object d = py::cast(PyDelivery{tracker});
            attach_callback(d, on_delivery);
            return d;
          },
          py::arg("value"), py::kw_only(), py::arg("key") = py::none(), py::arg("headers") = py::none(),
          py::arg("timestamp_ms") = py::none(), py::arg("on_delivery") = py::none(),
          py::arg("block_timeout") = py::none(),
          "Encode `value` with the publisher's codec and queue it. Returns a Delivery; on_delivery(delivery) is "
          "called once it has its result. Blocks (GIL released, Ctrl-C works) only while the queue is full, up "
          "to block_timeout seconds (default: the block_timeout_ms option; 0: never block), then raises "
          "ResourceExhausted. Raises TypeError/CodecError for a value the codec "
          "cannot encode, Closed after close().")
      .def(
          "publish_many",
          [](PyPublisher& p, py::handle values, py::handle keys, py::handle headers, py::object on_delivery,
             std::optional<double> block_timeout) {
            // Any iterable; a list or tuple is used as it is.
            py::sequence vals = PySequence_Check(values.ptr())
                                    ? py::reinterpret_borrow<py::sequence>(values)
                                    : py::sequence(py::module_::import("builtins").attr("list")(values));
            const std::size_t n = py::len(vals);
            std::optional<py::sequence> ks, hs;
            if (!keys.is_none()) {
              ks = py::reinterpret_borrow<py::sequence>(keys);
              if (py::len(*ks) != n)
                throw Error(ErrorCode::InvalidArgument, "keys has " + std::to_string(py::len(*ks)) +
                                                            " items for " + std::to_string(n) + " values");
            }
            if (!headers.is_none()) {
              hs = py::reinterpret_borrow<py::sequence>(headers);
              if (py::len(*hs) != n)
                throw Error(ErrorCode::InvalidArgument, "headers has " + std::to_string(py::len(*hs)) +
                                                            " items for " + std::to_string(n) + " values");
            }
            // Encode everything first: a value that fails to encode rejects the
            // whole call before anything is queued, naming its index.
            std::vector<OutMessage> msgs;
            msgs.reserve(n);
            py::none none;
            for (std::size_t i = 0; i < n; ++i) {
              py::object v = vals[i];
              py::object k = ks ? py::object((*ks)[i]) : py::object(none);
              py::object h = hs ? py::object((*hs)[i]) : py::object(none);
              msgs.push_back(make_message(p, v, k, h, i));
            }
            auto tracker = std::make_shared<DeliveryTracker>(n);
            enqueue_all(p, msgs, tracker, block_timeout);
            py::object d = py::cast(PyDelivery{tracker});
            attach_callback(d, on_delivery);
            return d;
          },
          py::arg("values"), py::kw_only(), py::arg("keys") = py::none(), py::arg("headers") = py::none(),
          py::arg("on_delivery") = py::none(), py::arg("block_timeout") = py::none(),
          "Encode and queue a batch in one call (one boundary crossing). keys/headers, when given, are sequences "
          "of the same length. A value that cannot be encoded raises (TypeError/CodecError naming its index) "
          "before anything is queued. Returns one Delivery for the batch; its result() names every failed index.")
      .def(
          "request",
          [](PyPublisher& p, py::handle value, py::handle key, py::handle headers, std::optional<double> timeout) {
            const auto limit = to_timeout(timeout, "timeout");
            OutMessage m = make_message(p, value, key, headers, 0);
            std::unique_ptr<PendingReply> pending;
            {
              py::gil_scoped_release release;  // the driver sends on the network
              pending = p.pub->send_request(std::move(m));
            }
            // Waits in slices on the one request sent: Ctrl-C interrupts the
            // wait (abandoning the request) without sending it again.
            MessagePtr reply;
            bool ok = wait_interruptible(limit, [&](Clock::duration slice) {
              reply = pending->wait(std::chrono::ceil<std::chrono::milliseconds>(slice));
              return reply != nullptr;
            });
            if (!ok) raise(p.pub->request_timeout(limit.value_or(Clock::duration::zero())));
            return PyMessage{std::move(reply), p.codec};
          },
          py::arg("value"), py::kw_only(), py::arg("key") = py::none(), py::arg("headers") = py::none(),
          py::arg("timeout") = 5.0,
          "Request-reply (capabilities()['request_reply']: nats:// core, mem://): encode `value` with the "
          "publisher's codec, send it with a reply address of its own, and wait up to `timeout` seconds (None: no "
          "limit) for the first reply, returned as a Message decoded with this publisher's codec. Bypasses the "
          "publish queue. GIL released; Ctrl-C interrupts the wait. Raises Timeout naming the URL and the timeout "
          "when no reply came, Timeout at once when nothing subscribes to the subject (no responders), Unsupported "
          "for other protocols, Closed after close().")
      .def(
          "_request_start_many",
          [](PyPublisher& p, py::list items, const std::shared_ptr<Notifier>& notifier) {
            // items: [(value, key, headers, token)]. Encoded with the GIL, then
            // sent in one GIL release, all but the last marked `more` so that a
            // network driver writes the batch together.
            const std::size_t n = items.size();
            std::vector<std::optional<OutMessage>> msgs(n);
            std::vector<std::uint64_t> tokens(n);
            std::vector<py::object> errors(n);
            for (std::size_t i = 0; i < n; ++i) {
              py::tuple t = items[i].cast<py::tuple>();
              tokens[i] = t[3].cast<std::uint64_t>();
              try {
                msgs[i] = make_message(p, t[0], t[1], t[2], 0);
              } catch (py::error_already_set& e) {
                errors[i] = e.value();
              } catch (const Error& e) {
                errors[i] = make_exception(e);
              } catch (py::builtin_exception& e) {  // TypeError of bad headers, say
                e.set_error();
                errors[i] = py::error_already_set().value();
              }
            }
            std::vector<std::unique_ptr<PendingReply>> pending(n);
            std::vector<std::optional<Error>> failed(n);
            {
              py::gil_scoped_release release;  // the driver sends on the network
              std::size_t last = n;
              for (std::size_t i = 0; i < n; ++i)
                if (msgs[i]) last = i;
              for (std::size_t i = 0; i < n; ++i) {
                if (!msgs[i]) continue;
                try {
                  pending[i] = p.pub->send_request(std::move(*msgs[i]), i != last);
                  // The notifier, not the request, is captured: a late wake-up
                  // of a request already abandoned is drained and ignored.
                  pending[i]->on_ready([notifier, token = tokens[i]] { notifier->post(token); });
                } catch (const Error& e) {
                  failed[i] = e;
                }
              }
            }
            py::list out(n);
            for (std::size_t i = 0; i < n; ++i) {
              if (errors[i])
                out[i] = errors[i];
              else if (failed[i])
                out[i] = make_exception(*failed[i]);
              else
                out[i] = py::cast(PyPendingRequest{std::move(pending[i]), p.pub, p.codec});
            }
            return out;
          },
          py::arg("items"), py::arg("notifier"),
          "The sending half of request() for omnibus.aio, for a batch [(value, key, headers, token)]: returns, "
          "per item, a request whose token is posted to `notifier` once its poll() would not block, or the "
          "exception that kept it from being sent.")
      .def(
          "flush",
          [](PyPublisher& p, std::optional<double> timeout) {
            return wait_interruptible(to_timeout(timeout, "timeout"),
                                      [&](Clock::duration slice) { return p.pub->flush(slice); });
          },
          py::arg("timeout") = py::none(),
          "Send everything queued now (ignoring linger) and wait until nothing is pending. Returns False when "
          "`timeout` seconds passed first. GIL released; Ctrl-C works.")
      .def(
          "close",
          [](PyPublisher& p, std::optional<double> timeout) {
            if (p.pub->closed()) return;
            wait_interruptible(to_timeout(timeout, "timeout"), [&](Clock::duration slice) { return p.pub->flush(slice); });
            std::vector<Undelivered> lost;
            {
              py::gil_scoped_release release;
              lost = p.pub->close(Clock::duration::zero());
            }
            if (lost.empty()) return;
            py::list items;
            for (auto& u : lost) {
              py::object key = u.message.key ? py::object(py::bytes(*u.message.key)) : py::object(py::none());
              items.append(PyUndelivered{py::bytes(*u.message.payload), key, headers_to_python(u.message.headers),
                                         make_exception(u.error)});
            }
            py::object exc = make_exception(Error(
                ErrorCode::Timeout, "publisher for " + p.pub->url() + " closed with " + std::to_string(lost.size()) +
                                        " undelivered message(s) after waiting " +
                                        (timeout ? std::to_string(*timeout) + " s" : std::string("")) +
                                        "; they are listed in .undelivered"));
            exc.attr("undelivered") = items;
            raise_object(exc);
          },
          py::arg("timeout") = 30.0,
          "Stop accepting messages, flush for up to `timeout` seconds (None: no limit), then close. Raises "
          "Timeout with .undelivered (payload, key, headers, error of each) when something could not be "
          "delivered; each of those messages' Delivery fails with Closed. Idempotent.")
      .def_property_readonly("closed", [](const PyPublisher& p) { return p.pub->closed(); })
      .def_property_readonly("url", [](const PyPublisher& p) { return p.pub->url(); })
      .def("__repr__", [](const PyPublisher& p) {
        return endpoint_repr("Publisher", p.pub->url(), p.codec->name(), p.pub->closed(),
                             p.pub->closed() ? std::nullopt : p.pub->connected());
      })
      .def_property_readonly("codec", [](const PyPublisher& p) { return p.codec->name(); })
      .def_property_readonly("connected", [](const PyPublisher& p) { return p.pub->connected(); },
                             "True while connected to the broker, False while reconnecting, None when the "
                             "driver cannot tell (kafka:// with rdkafka.statistics.interval.ms=0).")
      .def("capabilities", [](const PyPublisher& p) { return capabilities_to_python(p.pub->capabilities()); },
           "What the protocol behind this URL can do (delivery guarantee, ordering, nack, ...).")
      .def(
          "stats",
          [](const PyPublisher& p) {
            auto s = p.pub->stats();
            py::dict d;
            d["batches_sent"] = s.batches_sent;
            d["messages_sent"] = s.messages_sent;
            d["messages_delivered"] = s.messages_delivered;
            d["messages_failed"] = s.messages_failed;
            d["messages_resent"] = s.messages_resent;
            d["pending"] = s.pending;
            d["largest_batch"] = s.largest_batch;
            return d;
          },
          "Counters: batches_sent, messages_sent, messages_delivered, messages_failed, messages_resent (sends repeated "
          "after a retryable failure), pending, largest_batch.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](py::object self, py::args) {
        self.attr("close")();
        return false;
      });
}

}  // namespace omnibus::bind
