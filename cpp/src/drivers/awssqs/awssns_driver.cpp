// awssns:// -- Amazon SNS.
//
// SNS speaks the query protocol (form-encoded requests, XML responses). A
// publisher sends PublishBatch requests (10 entries, 256 KiB in all), the
// message in the same envelope as awssqs:// (attributes pass through SNS raw
// delivery unchanged). SNS has no subscriber of its own: a subscriber is an
// SQS queue subscribed to the topic with RawMessageDelivery, received from as
// awssqs:// does. Without group= or queue= the queue is private (created at
// open, unsubscribed and deleted at close), so every subscriber gets every
// message; with group=G the queue TOPIC-G is shared and outlives them; queue=
// names an existing or new queue.

#include <cctype>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>

#include "core/base64.hpp"
#include "drivers/awssqs/awssqs_driver.hpp"
#include "drivers/awssqs/envelope.hpp"
#include "drivers/awssqs/sqs.hpp"

namespace omnibus {
namespace {

using namespace detail::aws;
namespace env = detail::sqs;

// application/x-www-form-urlencoded.
std::string form_escape(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else if (c == ' ') {
      out.push_back('+');  // as HTML forms (and Python's urlencode, which moto checks signatures with) do
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

std::string xml_unescape(std::string s) {
  static const std::pair<const char*, char> entities[] = {
      {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}, {"&amp;", '&'}};
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    bool hit = false;
    if (s[i] == '&') {
      for (const auto& [name, c] : entities) {
        if (s.compare(i, std::strlen(name), name) == 0) {
          out.push_back(c);
          i += std::strlen(name);
          hit = true;
          break;
        }
      }
    }
    if (!hit) out.push_back(s[i++]);
  }
  return out;
}

// The contents of every <tag>...</tag> in `xml`, in order (no nesting of the same tag).
std::vector<std::string> xml_all(const std::string& xml, const std::string& tag) {
  std::vector<std::string> out;
  const std::string open = "<" + tag + ">", close = "</" + tag + ">";
  for (std::size_t pos = 0;;) {
    auto b = xml.find(open, pos);
    if (b == std::string::npos) break;
    b += open.size();
    auto e = xml.find(close, b);
    if (e == std::string::npos) break;
    out.push_back(xml.substr(b, e - b));
    pos = e + close.size();
  }
  return out;
}

std::string xml_first(const std::string& xml, const std::string& tag) {
  auto all = xml_all(xml, tag);
  return all.empty() ? std::string() : xml_unescape(all.front());
}

struct Form {
  std::string text;
  Form(const std::string& action) : text("Action=" + action + "&Version=2010-03-31") {}
  Form& add(const std::string& name, std::string_view value) {
    text += "&" + name + "=" + form_escape(value);
    return *this;
  }
};

struct Topic {
  std::shared_ptr<Service> svc;
  std::string arn;
};

std::string topic_arn(const Location& loc, const std::string& account) {
  return "arn:aws:sns:" + loc.region + ":" + account + ":" + loc.queue;
}

Topic open_topic(const Url& url, const OptionValues& o) {
  global_init();
  Topic t;
  t.svc = std::make_shared<Service>(make_service(url, o, "sns"));
  const auto& loc = t.svc->loc;
  Pool pool(*t.svc, 1);
  if (o.get_bool("create")) {
    t.arn = xml_first(pool.call_raw("CreateTopic", Form("CreateTopic").add("Name", loc.queue).text, kRequestTimeout,
                                    loc.queue).get<std::string>(),
                      "TopicArn");
  } else if (!loc.account.empty()) {
    t.arn = topic_arn(loc, loc.account);
    pool.call_raw("GetTopicAttributes", Form("GetTopicAttributes").add("TopicArn", t.arn).text, kRequestTimeout,
                  loc.queue);
  } else {
    // No account in the URL: find the topic by name among the account's.
    std::string token;
    do {
      Form f("ListTopics");
      if (!token.empty()) f.add("NextToken", token);
      std::string xml = pool.call_raw("ListTopics", f.text, kRequestTimeout, loc.queue).get<std::string>();
      for (auto& arn : xml_all(xml, "TopicArn"))
        if (ends_with(arn, ":" + loc.queue)) t.arn = xml_unescape(arn);
      token = xml_first(xml, "NextToken");
    } while (t.arn.empty() && !token.empty());
    if (t.arn.empty())
      throw Error(ErrorCode::NotFound, t.svc->scheme + " topic '" + loc.queue + "' does not exist at " + loc.endpoint +
                                           " (create it, or give ?create=true)");
  }
  if (t.arn.empty())
    throw Error(ErrorCode::Unavailable, t.svc->scheme + " " + loc.endpoint + " gave no TopicArn for " + loc.queue, 0, true);
  return t;
}

class SnsSender : public Sender {
 public:
  SnsSender(Topic t, const OptionValues& o)
      : t_(std::move(t)), pool_(std::make_unique<Pool>(*t_.svc, static_cast<std::size_t>(o.get_int("max_in_flight")))) {}

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    if (closed_) throw Error(ErrorCode::Closed, t_.svc->scheme + " sender is closed");
    std::vector<std::vector<std::size_t>> chunks;
    std::vector<Pool::Call> calls;
    std::unique_ptr<Form> form;
    std::vector<std::size_t> members;
    std::size_t bytes = 0;
    auto flush = [&] {
      if (members.empty()) return;
      Pool::Call c;
      c.action = "PublishBatch";
      c.body = std::move(form->text);
      calls.push_back(std::move(c));
      chunks.push_back(std::move(members));
      form.reset();
      members.clear();
      bytes = 0;
    };
    for (std::size_t i = 0; i < batch.size(); ++i) {
      env::Encoded e = env::encode(batch[i]);
      const std::size_t size = e.bytes();
      if (size > env::kMaxMessageBytes) {
        Error err(ErrorCode::ResourceExhausted,
                  "message of " + std::to_string(batch[i].payload->size()) + " payload bytes is " +
                      std::to_string(size) + " bytes as SNS counts it (body and attributes), over max_message_bytes=" +
                      std::to_string(env::kMaxMessageBytes) + " of " + t_.svc->scheme + t_.svc->loc.queue,
                  0, false);
        on_result(i, &err);
        continue;
      }
      if (members.size() == kBatchEntries || bytes + size > env::kMaxMessageBytes) flush();
      if (!form) form = std::make_unique<Form>("PublishBatch"), form->add("TopicArn", t_.arn);
      const std::string p = "PublishBatchRequestEntries.member." + std::to_string(members.size() + 1) + ".";
      form->add(p + "Id", std::to_string(i)).add(p + "Message", e.body);
      for (std::size_t a = 0; a < e.attributes.size(); ++a) {
        const auto& at = e.attributes[a];
        const std::string q = p + "MessageAttributes.entry." + std::to_string(a + 1) + ".";
        form->add(q + "Name", at.name).add(q + "Value.DataType", at.type);
        if (at.binary()) form->add(q + "Value.BinaryValue", b64_encode(at.value));
        else form->add(q + "Value.StringValue", at.value);
      }
      members.push_back(i);
      bytes += size;
    }
    flush();
    if (calls.empty()) return;
    pool_->run(calls, kRequestTimeout, nullptr, t_.svc->loc.queue);
    for (std::size_t c = 0; c < calls.size(); ++c) report(calls[c], chunks[c], on_result);
  }

  Capabilities capabilities() const override { return sqs_capabilities(false, true); }
  std::optional<bool> connected() const override { return connected_.load(); }
  void close() override {
    closed_ = true;
    pool_.reset();
  }

 private:
  void report(const Pool::Call& call, const std::vector<std::size_t>& members, const SendResultFn& on_result) {
    std::unordered_map<std::size_t, Error> failed;
    std::unordered_map<std::size_t, bool> ok;
    if (!call.error) parse_results(call.result, failed, ok);
    report_batch(call, members, failed, ok, t_.svc->scheme + " PublishBatch gave no result for a message", connected_,
                 on_result);
  }

  void parse_results(const json& result, std::unordered_map<std::size_t, Error>& failed,
                     std::unordered_map<std::size_t, bool>& ok) const {
    const std::string xml = result.is_string() ? result.get<std::string>() : std::string();
    auto id_of = [](const std::string& member) -> std::optional<std::size_t> {
      try {
        return std::stoul(xml_first(member, "Id"));
      } catch (const std::exception&) {
        return std::nullopt;
      }
    };
    for (const auto& section : xml_all(xml, "Failed"))
      for (const auto& m : xml_all(section, "member")) {
        auto id = id_of(m);
        if (!id) continue;
        bool sender = xml_first(m, "SenderFault") == "true";
        failed.emplace(*id, Error(sender ? ErrorCode::InvalidArgument : ErrorCode::Unavailable,
                                  t_.svc->scheme + t_.svc->loc.queue + " refused the message: " + xml_first(m, "Code") +
                                      ": " + xml_first(m, "Message"),
                                  0, !sender));
      }
    for (const auto& section : xml_all(xml, "Successful"))
      for (const auto& m : xml_all(section, "member"))
        if (auto id = id_of(m)) ok[*id] = true;
  }

  Topic t_;
  std::unique_ptr<Pool> pool_;
  bool closed_ = false;
  std::atomic<bool> connected_{true};
};

// The SQS service beside an SNS one: same credentials and region; the
// endpoint given (one endpoint serves both on moto and LocalStack), else
// AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL, else AWS's for the region.
std::shared_ptr<Service> sqs_beside(const Service& sns, const OptionValues& o, const std::string& queue) {
  auto s = std::make_shared<Service>(sns);
  s->name = "sqs";
  s->target_prefix = "AmazonSQS.";
  s->sigv4 = "aws:amz:" + sns.loc.region + ":sqs";
  s->loc.queue = queue;
  s->loc.account.clear();
  if (o.was_given("endpoint") && !o.get_string("endpoint").empty()) s->loc.endpoint = sns.loc.endpoint;
  else if (const char* e = getenv_nonempty("AWS_ENDPOINT_URL_SQS")) s->loc.endpoint = e;
  else if (const char* e2 = getenv_nonempty("AWS_ENDPOINT_URL")) s->loc.endpoint = e2;
  else s->loc.endpoint = "https://sqs." + sns.loc.region + ".amazonaws.com";
  while (!s->loc.endpoint.empty() && s->loc.endpoint.back() == '/') s->loc.endpoint.pop_back();
  return s;
}

std::string random_hex(std::size_t n) {
  static std::mutex mu;
  static std::mt19937_64 rng(std::random_device{}());
  std::lock_guard lock(mu);
  std::string out;
  while (out.size() < n) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
    out += buf;
  }
  return out.substr(0, n);
}

// An SQS queue name from free text: [A-Za-z0-9_-], at most `max` characters.
std::string queue_name_part(const std::string& s, std::size_t max) {
  std::string out;
  for (char c : s) {
    if (out.size() == max) break;
    out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ? c : '_');
  }
  return out;
}

class SnsDriver : public Driver {
 public:
  std::string scheme() const override { return "awssns"; }
  std::string description() const override {
    return "Amazon SNS (libcurl, SigV4): PublishBatch; a subscriber is an SQS queue subscribed with raw "
           "delivery (private per subscriber, or shared per group=)";
  }
  std::vector<OptionSpec> sender_options() const override {
    auto o = common_options("sns", "the topic (CreateTopic)");
    o.push_back({"max_in_flight", OptionType::Int, "8",
                 "PublishBatch requests of one publish batch sent concurrently (one connection each)", {}, 1, 64});
    return o;
  }
  std::vector<OptionSpec> receiver_options() const override {
    auto o = common_options("sns", "the topic (CreateTopic)");
    o.push_back({"group", OptionType::String, "",
                 "subscribers of one group share the SQS queue TOPIC-GROUP (created, subscribed, kept); empty: a "
                 "private queue per subscriber, deleted at close, so every subscriber gets every message"});
    o.push_back({"queue", OptionType::String, "",
                 "the SQS queue to subscribe and receive from (created when missing, kept); overrides group"});
    o.push_back({"ack_deadline_ms", OptionType::Int, "30000",
                 "visibility timeout of the queue's messages (rounded up to whole seconds)", {}, 0, 43200000});
    o.push_back({"wait_seconds", OptionType::Int, "1",
                 "long-poll time of each ReceiveMessage (SQS allows up to 20); close() waits for the polls in flight, "
                 "so up to this long. More costs fewer requests on an idle queue (SQS bills each)", {}, 0, 20});
    o.push_back({"pollers", OptionType::Int, "2", "ReceiveMessage requests in flight at once (threads)", {}, 1, 32});
    return o;
  }
  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    return std::make_shared<SnsSender>(open_topic(url, options), options);
  }
  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options,
                                          const ReceiverSettings&) override {
    Topic t = open_topic(url, options);
    std::string queue = options.get_string("queue");
    const bool named = !queue.empty() || !options.get_string("group").empty();
    if (queue.empty() && named)
      queue = queue_name_part(t.svc->loc.queue, 40) + "-" + queue_name_part(options.get_string("group"), 39);
    if (queue.empty()) queue = "omnibus-" + queue_name_part(t.svc->loc.queue, 50) + "-" + random_hex(16);
    auto sqs = sqs_beside(*t.svc, options, queue);
    // Only this topic may send to the queue (AWS checks it; moto does not).
    json policy = {{"Version", "2012-10-17"},
                   {"Statement",
                    {{{"Effect", "Allow"},
                      {"Principal", {{"Service", "sns.amazonaws.com"}}},
                      {"Action", "sqs:SendMessage"},
                      {"Resource", "*"},
                      {"Condition", {{"ArnEquals", {{"aws:SourceArn", t.arn}}}}}}}}};
    Queue q = open_queue(sqs, true, json{{"Policy", policy.dump()}});
    q.fan_out = true;
    Pool pool(*q.svc, 1);
    std::string queue_arn =
        pool.call("GetQueueAttributes", {{"QueueUrl", q.url}, {"AttributeNames", {"QueueArn"}}}, kRequestTimeout, queue)
            .value("Attributes", json::object())
            .value("QueueArn", std::string());
    Pool sns_pool(*t.svc, 1);
    std::string xml = sns_pool
                          .call_raw("Subscribe",
                                    Form("Subscribe")
                                        .add("TopicArn", t.arn)
                                        .add("Protocol", "sqs")
                                        .add("Endpoint", queue_arn)
                                        .add("ReturnSubscriptionArn", "true")
                                        .add("Attributes.entry.1.key", "RawMessageDelivery")
                                        .add("Attributes.entry.1.value", "true")
                                        .text,
                                    kRequestTimeout, t.svc->loc.queue)
                          .get<std::string>();
    std::string subscription = xml_first(xml, "SubscriptionArn");
    std::function<void()> on_close;
    if (!named) {
      // A private queue goes with its subscriber.
      auto sns_svc = t.svc;
      auto queue_url = q.url;
      auto sqs_svc = q.svc;
      on_close = [sns_svc, sqs_svc, subscription, queue_url] {
        Pool sp(*sns_svc, 1);
        if (!subscription.empty())
          sp.call_raw("Unsubscribe", Form("Unsubscribe").add("SubscriptionArn", subscription).text, kRequestTimeout,
                      sns_svc->loc.queue);
        Pool qp(*sqs_svc, 1);
        qp.call("DeleteQueue", {{"QueueUrl", queue_url}}, kRequestTimeout, sqs_svc->loc.queue);
      };
    }
    return make_sqs_receiver(std::move(q), options, std::move(on_close));
  }
};

}  // namespace

std::shared_ptr<Driver> make_awssns_driver() { return std::make_shared<SnsDriver>(); }

}  // namespace omnibus
