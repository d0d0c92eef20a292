#include "omnibus/bridge.hpp"

#include <algorithm>
#include <cctype>

#include "core/backoff.hpp"
#include "omnibus/error.hpp"
#include "omnibus/url.hpp"

namespace omnibus {

// A batch received from the source. Items are only read after handle() built
// them (the sink keeps its own copies), so delivery callbacks on driver
// threads read them without a lock.
struct Bridge::Batch {
  std::vector<BridgeItem> items;
  std::vector<char> to_dead_letter;  // item i goes (went) to the dead-letter sink (char: set from several threads)
  int retry_rounds = 0;              // guarded by Bridge::mu_
};

namespace {

constexpr auto kPoll = std::chrono::milliseconds(100);

std::vector<std::string> split_levels(const std::string& topic, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    auto pos = topic.find(sep, start);
    out.push_back(topic.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
    if (pos == std::string::npos) return out;
    start = pos + 1;
  }
}

Error key_template_error(const std::string& tmpl, const std::string& why) {
  return Error(ErrorCode::InvalidArgument,
               "key template " + printable(tmpl) + ": " + why +
                   "; valid fields are {topic}, {topic[N]} (topic level N, negative counts from the end), "
                   "{key} (the source key), and {{ }} for literal braces");
}

}  // namespace

std::shared_ptr<Bridge> Bridge::open(const std::string& source_url, const std::string& sink_url,
                                     BridgeConfig config, BridgeTransform transform,
                                     const std::vector<std::pair<std::string, std::string>>& source_options,
                                     const std::vector<std::pair<std::string, std::string>>& sink_options) {
  if (config.batch == 0) throw Error(ErrorCode::InvalidArgument, "bridge batch must be >= 1, got 0");
  if (config.max_in_flight < config.batch)
    throw Error(ErrorCode::InvalidArgument, "bridge max_in_flight (" + std::to_string(config.max_in_flight) +
                                                ") must be >= batch (" + std::to_string(config.batch) + ")");
  // Codec names are checked before anything connects.
  builtin_codec(config.source_codec);
  builtin_codec(config.sink_codec);
  // Topic levels, for {topic[N]}: '/' in MQTT topics and mem:// names, '.' in
  // NATS subjects, AMQP routing keys and Kafka topics.
  const auto scheme = Url::parse(source_url).scheme;
  const char level_separator = scheme == "mqtt" || scheme == "mem" ? '/' : '.';
  Url::parse(sink_url);
  if (!config.dead_letter_url.empty()) Url::parse(config.dead_letter_url);

  // Manual ack: the bridge acks a source message once the sink confirmed it.
  auto src_opts = source_options;
  src_opts.emplace_back("auto_ack", "false");
  auto source = Subscriber::open(source_url, src_opts);
  auto sink = Publisher::open(sink_url, sink_options);
  std::shared_ptr<Publisher> dead;
  if (!config.dead_letter_url.empty()) dead = Publisher::open(config.dead_letter_url);
  return std::shared_ptr<Bridge>(new Bridge(std::move(source), std::move(sink), std::move(dead), std::move(config),
                                            std::move(transform), level_separator));
}

Bridge::Bridge(std::shared_ptr<Subscriber> source, std::shared_ptr<Publisher> sink,
               std::shared_ptr<Publisher> dead_letter, BridgeConfig config, BridgeTransform transform,
               char level_separator)
    : source_(std::move(source)),
      sink_(std::move(sink)),
      dead_letter_(std::move(dead_letter)),
      config_(std::move(config)),
      transform_(std::move(transform)),
      level_separator_(level_separator) {
  if (config_.source_codec != "raw") source_codec_ = builtin_codec(config_.source_codec);
  if (config_.sink_codec != "raw" && config_.sink_codec != config_.source_codec)
    sink_codec_ = builtin_codec(config_.sink_codec);
  const auto& t = config_.key_template;
  std::string literal;
  for (std::size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    if (c == '}') {
      if (i + 1 < t.size() && t[i + 1] == '}') {
        literal += '}';
        ++i;
        continue;
      }
      throw key_template_error(t, "a single '}' at offset " + std::to_string(i));
    }
    if (c != '{') {
      literal += c;
      continue;
    }
    if (i + 1 < t.size() && t[i + 1] == '{') {
      literal += '{';
      ++i;
      continue;
    }
    auto end = t.find('}', i);
    if (end == std::string::npos) throw key_template_error(t, "'{' at offset " + std::to_string(i) + " is not closed");
    std::string field = t.substr(i + 1, end - i - 1);
    if (!literal.empty()) key_parts_.push_back(KeyPart{KeyPart::Literal, std::move(literal)});
    literal.clear();
    KeyPart part{KeyPart::Literal, {}};
    if (field == "topic") {
      part.kind = KeyPart::Topic;
    } else if (field == "key") {
      part.kind = KeyPart::Key;
    } else if (field.rfind("topic[", 0) == 0 && field.back() == ']') {
      std::string n = field.substr(6, field.size() - 7);
      bool ok = !n.empty() && std::all_of(n.begin() + (n[0] == '-' ? 1 : 0), n.end(),
                                          [](unsigned char d) { return std::isdigit(d); }) &&
                n != "-" && n.size() < 6;
      if (!ok) throw key_template_error(t, "topic level " + printable(n) + " is not an integer");
      part.kind = KeyPart::TopicLevel;
      part.level = std::stoi(n);
    } else {
      throw key_template_error(t, "unknown field " + printable("{" + field + "}"));
    }
    key_parts_.push_back(std::move(part));
    i = end;
  }
  if (!literal.empty()) key_parts_.push_back(KeyPart{KeyPart::Literal, std::move(literal)});

  thread_ = std::thread([this] { run(); });
}

Bridge::~Bridge() { stop(std::chrono::seconds(10)); }

std::string Bridge::source_guarantee() const { return source_->capabilities().delivery_guarantee; }
std::string Bridge::sink_guarantee() const { return sink_->capabilities().delivery_guarantee; }
std::string Bridge::delivery_guarantee() const {
  auto a = source_guarantee(), b = sink_guarantee();
  return a == "at-least-once" && b == "at-least-once" ? a : "at-most-once";
}

BridgeStats Bridge::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

std::string Bridge::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

bool Bridge::failed() const {
  std::lock_guard lock(mu_);
  return failed_;
}

void Bridge::request_stop() {
  std::lock_guard lock(mu_);
  stopping_ = true;
  cv_.notify_all();
}

void Bridge::note_error(const std::string& what) {
  std::lock_guard lock(mu_);
  last_error_ = what;
}

bool Bridge::wait_idle(Clock::duration timeout) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return stats_.in_flight == 0; });
}

std::string Bridge::map_key(const Message& m) const {
  std::string out;
  std::vector<std::string> levels;
  for (const auto& p : key_parts_) {
    switch (p.kind) {
      case KeyPart::Literal:
        out += p.literal;
        break;
      case KeyPart::Key:
        if (m.key()) out += *m.key();
        break;
      case KeyPart::Topic:
        out += m.topic();
        break;
      case KeyPart::TopicLevel: {
        if (levels.empty()) levels = split_levels(m.topic(), level_separator_);
        int n = static_cast<int>(levels.size());
        int at = p.level < 0 ? n + p.level : p.level;
        // A topic with fewer levels maps to an empty part rather than failing
        // the message: the key is a routing hint, not data.
        if (at >= 0 && at < n) out += levels[static_cast<std::size_t>(at)];
        break;
      }
    }
  }
  return out;
}

void Bridge::run() {
  for (;;) {
    std::vector<Retry> due;
    std::size_t room = 0;
    {
      std::unique_lock lock(mu_);
      auto now = Clock::now();
      auto next = now + kPoll;
      for (auto it = retries_.begin(); it != retries_.end();) {
        if (it->at <= now) {
          due.push_back(std::move(*it));
          it = retries_.erase(it);
        } else {
          next = std::min(next, it->at);
          ++it;
        }
      }
      if (due.empty()) {
        if (stopping_) {
          // Draining: nothing more is received; retries still go out until
          // stop() gives up (it then closes the sinks, failing the rest).
          if (stats_.in_flight == 0 || stopped_) return;
          cv_.wait_until(lock, next);
          continue;
        }
        if (stats_.in_flight >= config_.max_in_flight) {
          cv_.wait_until(lock, next);
          continue;
        }
        room = std::min(config_.batch, config_.max_in_flight - stats_.in_flight);
      }
    }
    for (auto& r : due) send(r.batch, std::move(r.indexes), r.retry);
    if (room == 0) continue;
    std::vector<MessagePtr> msgs;
    try {
      msgs = source_->receive_batch(room, kPoll);
    } catch (const Error& e) {
      std::lock_guard lock(mu_);
      if (stopping_) continue;
      // The subscriber's fetch thread failed for good (it reconnects by
      // itself; an error here is final): nothing more will come.
      failed_ = true;
      last_error_ = std::string("source ") + source_->url() + " failed: " + e.what();
      cv_.notify_all();
      return;
    }
    if (!msgs.empty()) handle(std::move(msgs));
  }
}

void Bridge::handle(std::vector<MessagePtr> msgs) {
  auto batch = std::make_shared<Batch>();
  const std::size_t n = msgs.size();
  {
    std::lock_guard lock(mu_);
    stats_.consumed += n;
    stats_.in_flight += n;
  }
  batch->items.resize(n);
  batch->to_dead_letter.assign(n, false);
  std::vector<std::pair<std::size_t, Error>> bad;  // undecodable
  for (std::size_t i = 0; i < n; ++i) {
    auto& item = batch->items[i];
    const Message& m = *msgs[i];
    item.out.payload = m.payload_ptr();
    if (key_parts_.empty()) {
      item.out.key = m.key();
    } else {
      item.out.key = map_key(m);
    }
    if (config_.keep_headers) item.out.headers = m.headers();
    item.out.headers.insert(item.out.headers.end(), config_.extra_headers.begin(), config_.extra_headers.end());
    if (config_.keep_timestamp) item.out.timestamp_ms = m.timestamp_ms();
    item.source = std::move(msgs[i]);
    if (source_codec_) {
      try {
        item.value = source_codec_->decode(item.source->payload());
        if (sink_codec_) item.out.payload = make_bytes(sink_codec_->encode(*item.value));
      } catch (const Error& e) {
        bad.emplace_back(i, e);
      }
    }
  }
  for (auto& [i, e] : bad) dead_letter(batch, i, e);

  if (transform_) {
    // The transform sees the good items only; its edits are copied back.
    std::vector<std::size_t> index;
    std::vector<BridgeItem> view;
    for (std::size_t i = 0; i < n; ++i)
      if (!batch->to_dead_letter[i] && !batch->items[i].drop) {
        index.push_back(i);
        view.push_back(std::move(batch->items[i]));
      }
    std::optional<Error> failure;
    try {
      if (!view.empty()) transform_(view);
    } catch (const Error& e) {
      failure = e;
    } catch (const std::exception& e) {
      failure = Error(ErrorCode::Internal, std::string("bridge transform raised: ") + e.what());
    }
    for (std::size_t j = 0; j < view.size() && j < index.size(); ++j) batch->items[index[j]] = std::move(view[j]);
    if (failure) {
      for (auto i : index) dead_letter(batch, i, *failure);
    }
  }

  std::vector<std::size_t> sink, dead;
  std::vector<MessagePtr> drop;
  for (std::size_t i = 0; i < n; ++i) {
    if (batch->to_dead_letter[i]) {
      if (dead_letter_) dead.push_back(i);
    } else if (batch->items[i].drop) {
      drop.push_back(batch->items[i].source);
    } else {
      sink.push_back(i);
    }
  }
  if (!drop.empty()) {
    {
      std::lock_guard lock(mu_);
      stats_.dropped += drop.size();
    }
    settle(drop, drop.size());
  }
  if (!dead.empty()) send(batch, std::move(dead), false);
  if (!sink.empty()) send(batch, std::move(sink), false);
}

// Marks item i for the dead-letter sink: its message becomes the source
// message plus the error. Without a dead-letter URL the message is given up:
// counted as failed and left unacked (so a source that redelivers brings it
// again after a restart) rather than dropped.
void Bridge::dead_letter(const std::shared_ptr<Batch>& batch, std::size_t i, const Error& error) {
  auto& item = batch->items[i];
  batch->to_dead_letter[i] = true;
  note_error(error.what());
  if (!dead_letter_) {
    std::lock_guard lock(mu_);
    stats_.failed += 1;
    stats_.in_flight -= 1;
    cv_.notify_all();
    return;
  }
  const Message& m = *item.source;
  OutMessage out;
  out.payload = m.payload_ptr();
  out.key = m.key();
  out.headers = m.headers();
  out.headers.emplace_back("omnibus-error", error.what());
  out.headers.emplace_back("omnibus-error-code", error_info(error.code()).name);
  out.headers.emplace_back("omnibus-source-topic", m.topic());
  out.timestamp_ms = m.timestamp_ms();
  item.out = std::move(out);
}

void Bridge::send(const std::shared_ptr<Batch>& batch, std::vector<std::size_t> indexes, bool retry) {
  const bool dead = batch->to_dead_letter[indexes.front()];
  auto& pub = dead ? dead_letter_ : sink_;
  std::vector<OutMessage> msgs;
  msgs.reserve(indexes.size());
  for (auto i : indexes) msgs.push_back(batch->items[i].out);
  if (retry) {
    std::lock_guard lock(mu_);
    stats_.retried += indexes.size();
  }
  auto tracker = std::make_shared<DeliveryTracker>(msgs.size());
  // The tracker outlives its callbacks (the publisher holds it until the last
  // result), so a raw pointer avoids a tracker -> callback -> tracker cycle.
  DeliveryTracker* raw = tracker.get();
  tracker->on_done([this, batch, indexes, raw, dead]() mutable {
    // Runs inside a driver's callback (librdkafka, Paho, cnats): an
    // exception must not unwind through C frames.
    try {
      on_batch_done(batch, std::move(indexes), raw, dead);
    } catch (const std::exception& e) {
      note_error(std::string("bridge: ") + e.what());
    } catch (...) {
    }
  });
  std::size_t sent = 0;
  try {
    // Back-pressure: the sink's queue is full while its broker is away. Wait
    // in slices so that the end of stop()'s drain is seen; the messages stay
    // unacked meanwhile.
    while (sent < msgs.size()) {
      sent += pub->enqueue(msgs, sent, tracker, sent, kPoll);
      bool given_up;
      {
        std::lock_guard lock(mu_);
        given_up = stopped_;  // stop()'s drain time is over
      }
      if (sent < msgs.size() && given_up) {
        Error err(ErrorCode::Closed, "bridge stopped before the sink took the message");
        tracker->fail_rest(sent, err);
        return;
      }
    }
  } catch (const Error& e) {
    tracker->fail_rest(sent, e);
  }
}

void Bridge::on_batch_done(const std::shared_ptr<Batch>& batch, std::vector<std::size_t> indexes,
                           DeliveryTracker* tracker, bool dead) {
  auto failures = tracker->failures();
  std::vector<MessagePtr> ack;
  std::vector<std::size_t> again, to_dead;
  std::size_t given_up = 0;
  std::string last;
  std::size_t f = 0;
  for (std::size_t j = 0; j < indexes.size(); ++j) {
    const std::size_t i = indexes[j];
    if (f < failures.size() && failures[f].first == j) {
      const Error& e = failures[f].second;
      ++f;
      last = std::string(dead ? "dead-letter sink " : "sink ") + (dead ? dead_letter_ : sink_)->url() + ": " + e.what();
      // Only a broker that is away (or slow) is waited out; anything else
      // (too large, refused, closed) would fail again the same way.
      if (e.code() == ErrorCode::Unavailable || e.code() == ErrorCode::Timeout) {
        again.push_back(i);
      } else if (!dead && dead_letter_) {
        dead_letter(batch, i, e);
        to_dead.push_back(i);
      } else {
        // Given up: left unacked rather than nacked, which would bring it
        // straight back; a source that redelivers offers it again later.
        ++given_up;
      }
    } else {
      ack.push_back(batch->items[i].source);
    }
  }
  const std::size_t ok = ack.size();
  {
    std::lock_guard lock(mu_);
    if (dead) {
      stats_.dead_lettered += ok;
    } else {
      stats_.published += ok;
    }
    if (!last.empty()) last_error_ = last;
    // Retries and dead letters are sent by the bridge thread: this callback
    // may run inside the sink's own sender thread, which must not block on
    // its own full queue.
    auto queue = [&](std::vector<std::size_t>& list, Clock::duration wait, bool retry) {
      if (list.empty()) return;
      if (stopped_) {
        given_up += list.size();
        return;
      }
      retries_.push_back(Retry{batch, std::move(list), Clock::now() + wait, retry});
    };
    // The engine's backoff, per retry round of the batch: a sink whose broker
    // is away for minutes is not hammered, and batches failed together do not
    // all come back in the same instant.
    if (!again.empty()) {
      const auto round = static_cast<unsigned>(batch->retry_rounds++);
      queue(again, detail::backoff_delay(config_.retry_backoff, config_.max_retry_backoff, round, retry_rng_), true);
    }
    queue(to_dead, Clock::duration::zero(), false);
    stats_.failed += given_up;
    stats_.in_flight -= given_up;
    cv_.notify_all();
  }
  settle(ack, ok);
}

// Acks `msgs` on the source and counts `settled` messages out of flight.
void Bridge::settle(const std::vector<MessagePtr>& msgs, std::size_t settled) {
  if (!msgs.empty()) {
    try {
      Subscriber::ack(msgs);
    } catch (const std::exception& e) {
      // The source closed or lost its connection: the broker redelivers
      // these, so they are duplicates later, not losses.
      note_error(std::string("ack on source: ") + e.what());
    }
  }
  std::lock_guard lock(mu_);
  stats_.acked += msgs.size();
  stats_.in_flight -= settled;
  cv_.notify_all();
}

bool Bridge::stop(Clock::duration timeout) {
  std::lock_guard stop_lock(stop_mu_);  // a second caller waits for the first, then sees stopped_
  const auto deadline = Clock::now() + timeout;
  bool drained;
  {
    std::unique_lock lock(mu_);
    if (stopped_) return drained_;
    stopping_ = true;
    cv_.notify_all();
    drained = cv_.wait_until(lock, deadline, [&] { return stats_.in_flight == 0 || failed_; }) &&
              stats_.in_flight == 0;
    stopped_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  auto left = std::max<Clock::duration>(deadline - Clock::now(), std::chrono::milliseconds(100));
  // Closing the sinks fails what they still hold (counted, left unacked);
  // then the source closes and gives its unacked messages back.
  // stop() never throws (it runs in the destructor): a close that fails
  // has already failed its messages, which stay unacked at the source.
  auto quietly = [this](const char* what, auto&& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      note_error(std::string("closing the ") + what + ": " + e.what());
    }
  };
  quietly("sink", [&] { sink_->close(left); });
  if (dead_letter_) quietly("dead-letter sink", [&] { dead_letter_->close(left); });
  {
    std::lock_guard lock(mu_);
    // Retries queued after the thread ended are given up the same way.
    for (auto& r : retries_) {
      stats_.failed += r.indexes.size();
      stats_.in_flight -= r.indexes.size();
    }
    retries_.clear();
  }
  quietly("source", [&] { source_->close(); });
  std::lock_guard lock(mu_);
  drained_ = drained;
  return drained;
}

}  // namespace omnibus
