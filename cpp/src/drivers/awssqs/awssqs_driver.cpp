// awssqs:// -- Amazon SQS (and API-compatible servers: moto, LocalStack,
// ElasticMQ) over HTTP(S) with libcurl, the JSON protocol
// (application/x-amz-json-1.0), requests signed with SigV4 by libcurl itself
// (CURLOPT_AWS_SIGV4).
//
// URLs: awssqs://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE (the queue's own URL),
// or the short form awssqs:///QUEUE with the endpoint from ?endpoint=,
// AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL (else https://sqs.REGION.amazonaws.com)
// and the queue URL from GetQueueUrl (CreateQueue with ?create=true). The
// region comes from ?region=, the host name, AWS_REGION or AWS_DEFAULT_REGION.
// Credentials: the URL's userinfo (ACCESS_KEY_ID:SECRET, the secret
// percent-encoded), else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
// (/AWS_SESSION_TOKEN), else the shared credentials file
// (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, ?profile= or AWS_PROFILE).
//
// Model: a queue is one group. Its subscribers compete for its messages (SQS
// cannot fan out: awssns:// can); a received message is invisible to the
// others for the visibility timeout (the ack deadline), ack deletes it
// (DeleteMessageBatch), nack makes it visible at once
// (ChangeMessageVisibilityBatch to 0), ApproximateReceiveCount is the delivery
// attempt. Standard queues are at-least-once and unordered; FIFO queues
// (names ending in .fifo) keep order per MessageGroupId, which is the key.
//
// Threads and connections: libcurl easy handles are not shared between
// threads. A Sender's handles belong to the Publisher's sender thread, which
// sends the SendMessageBatch requests of one batch concurrently on a curl
// multi handle (one connection per request in flight, kept alive between
// batches). A Receiver runs `pollers` threads, each long-polling
// ReceiveMessage on a handle of its own into a bounded buffer, so that
// receive_batch() honours its short timeout and close() interrupts a poll at
// once (curl_multi_wakeup). Acks and nacks from any thread share one set of
// handles under a mutex.

#include "drivers/awssqs/awssqs_driver.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <random>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_map>

#include "core/base64.hpp"
#include "drivers/awssqs/envelope.hpp"
#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus {
namespace {

using json = nlohmann::json;
namespace env = detail::sqs;

constexpr std::size_t kBatchEntries = 10;  // SQS's limit per batch request

const char* getenv_nonempty(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// ---------------------------------------------------------------- where and who

struct Credentials {
  std::string key_id;
  std::string secret;
  std::string token;
  std::string source;  // for messages: where they came from
};

std::string trim(std::string s) {
  auto b = s.find_first_not_of(" \t\r\n");
  auto e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// The [profile] of an AWS shared credentials file (INI); false when absent.
bool read_credentials_file(const std::string& path, const std::string& profile, Credentials& out) {
  std::ifstream in(path);
  if (!in) return false;
  std::string line, section;
  bool found = false;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = trim(line.substr(1, line.size() - 2));
      continue;
    }
    if (section != profile) continue;
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string k = trim(line.substr(0, eq)), v = trim(line.substr(eq + 1));
    if (k == "aws_access_key_id") out.key_id = v, found = true;
    else if (k == "aws_secret_access_key") out.secret = v;
    else if (k == "aws_session_token") out.token = v;
  }
  out.source = "profile [" + profile + "] of " + path;
  return found;
}

Credentials resolve_credentials(const Url& url, const OptionValues& o, const std::string& scheme) {
  Credentials c;
  if (url.has_userinfo) {
    if (url.user.empty() || url.password.empty())
      throw Error(ErrorCode::InvalidArgument, scheme + ":// URL '" + url.text +
                                                  "' has userinfo without both parts: give ACCESS_KEY_ID:SECRET@ "
                                                  "(the secret percent-encoded), or no userinfo to use the environment");
    c.key_id = url.user;
    c.secret = url.password;
    c.source = "the URL";
    return c;
  }
  const char* id = getenv_nonempty("AWS_ACCESS_KEY_ID");
  const char* secret = getenv_nonempty("AWS_SECRET_ACCESS_KEY");
  if (id && secret) {
    c.key_id = id;
    c.secret = secret;
    if (const char* t = getenv_nonempty("AWS_SESSION_TOKEN")) c.token = t;
    c.source = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY";
    return c;
  }
  std::string profile = o.get_string("profile");
  if (profile.empty()) profile = getenv_nonempty("AWS_PROFILE") ? getenv_nonempty("AWS_PROFILE") : "default";
  std::string path;
  if (const char* p = getenv_nonempty("AWS_SHARED_CREDENTIALS_FILE")) path = p;
  else if (const char* home = getenv_nonempty("HOME")) path = std::string(home) + "/.aws/credentials";
  if (!path.empty() && read_credentials_file(path, profile, c)) {
    if (c.secret.empty())
      throw Error(ErrorCode::InvalidArgument, c.source + " has aws_access_key_id " + c.key_id +
                                                  " but no aws_secret_access_key");
    return c;
  }
  throw Error(ErrorCode::InvalidArgument,
              "no AWS credentials for " + url.text + ": give ACCESS_KEY_ID:SECRET@ in the URL, or set "
              "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile [" + profile + "] in " +
              (path.empty() ? std::string("~/.aws/credentials") : path) + " (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE)");
}

struct Location {
  std::string endpoint;   // scheme://host[:port], no trailing '/'
  std::string region;
  std::string account;    // empty in the short form
  std::string queue;      // the queue name (or, for awssns://, the topic name)
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// `service`: "sqs" or "sns" (host prefix and AWS_ENDPOINT_URL_<SERVICE>).
Location resolve_location(const Url& url, const OptionValues& o, const std::string& service) {
  const std::string shape = url.scheme + "://" + service + ".REGION.amazonaws.com/ACCOUNT/NAME or " + url.scheme +
                            ":///NAME?endpoint=URL&region=REGION";
  if (url.hosts.size() != 1)
    throw Error(ErrorCode::InvalidArgument, url.scheme + ":// takes one host, got '" + url.text + "'; " + shape);
  Location loc;
  const auto& hp = url.hosts[0];
  auto slash = url.path.find('/');
  if (slash == std::string::npos) {
    loc.queue = url.path;
  } else {
    loc.account = url.path.substr(0, slash);
    loc.queue = url.path.substr(slash + 1);
  }
  if (loc.queue.empty() || loc.queue.find('/') != std::string::npos)
    throw Error(ErrorCode::InvalidArgument, url.scheme + ":// URL '" + url.text + "' names no " +
                                                (service == "sqs" ? "queue" : "topic") + "; " + shape);
  // Region: the option, the host name, the environment.
  loc.region = o.get_string("region");
  const std::string prefix = service + ".", suffix = ".amazonaws.com";
  if (loc.region.empty() && hp.host.rfind(prefix, 0) == 0 && ends_with(hp.host, suffix))
    loc.region = hp.host.substr(prefix.size(), hp.host.size() - prefix.size() - suffix.size());
  if (loc.region.empty()) {
    if (const char* r = getenv_nonempty("AWS_REGION")) loc.region = r;
    else if (const char* r2 = getenv_nonempty("AWS_DEFAULT_REGION")) loc.region = r2;
  }
  if (loc.region.empty())
    throw Error(ErrorCode::InvalidArgument, "no AWS region for " + url.text +
                                                ": give ?region=, a host " + service +
                                                ".REGION.amazonaws.com, or set AWS_REGION");
  // Endpoint: the option, the URL's host, the environment, AWS's.
  std::string env_name = "AWS_ENDPOINT_URL_" + std::string(service == "sqs" ? "SQS" : "SNS");
  if (o.was_given("endpoint") && !o.get_string("endpoint").empty()) loc.endpoint = o.get_string("endpoint");
  else if (!hp.host.empty()) loc.endpoint = "https://" + hp.host + (hp.port ? ":" + std::to_string(hp.port) : "");
  else if (const char* e = getenv_nonempty(env_name.c_str())) loc.endpoint = e;
  else if (const char* e2 = getenv_nonempty("AWS_ENDPOINT_URL")) loc.endpoint = e2;
  else loc.endpoint = "https://" + service + "." + loc.region + ".amazonaws.com";
  while (!loc.endpoint.empty() && loc.endpoint.back() == '/') loc.endpoint.pop_back();
  if (loc.endpoint.rfind("http://", 0) != 0 && loc.endpoint.rfind("https://", 0) != 0)
    throw Error(ErrorCode::InvalidArgument, "endpoint '" + loc.endpoint + "' of " + url.text +
                                                " is not an http:// or https:// URL");
  return loc;
}

// ---------------------------------------------------------------- HTTP

// One AWS JSON-protocol service as seen by one client: where, who, and how to
// turn a response into JSON or an Error. Immutable, shared by the handles.
struct Service {
  std::string scheme;       // "awssqs", for messages
  std::string name;         // "sqs" or "sns"
  std::string target_prefix;  // "AmazonSQS." (JSON protocol), empty for SNS's query protocol
  Location loc;
  Credentials creds;
  std::string sigv4;        // "aws:amz:REGION:SERVICE"
};

// The error an AWS response (or a transport failure) means.
Error map_error(const Service& svc, const std::string& action, CURLcode rc, const char* curl_error, long status,
                const std::string& body, const std::string& queue) {
  const std::string where = svc.scheme + " " + action + " at " + svc.loc.endpoint;
  if (rc != CURLE_OK) {
    std::string detail = curl_error && *curl_error ? curl_error : curl_easy_strerror(rc);
    return Error(ErrorCode::Unavailable, where + " failed: " + detail, static_cast<int>(rc), true);
  }
  std::string code, message;
  json j = json::parse(body, nullptr, false);
  if (j.is_object()) {
    code = j.value("__type", std::string());
    if (auto hash = code.rfind('#'); hash != std::string::npos) code = code.substr(hash + 1);
    message = j.value("message", j.value("Message", std::string()));
  } else {
    auto tag = [&](const std::string& name) {
      auto b = body.find("<" + name + ">");
      auto e = body.find("</" + name + ">");
      if (b == std::string::npos || e == std::string::npos || e < b) return std::string();
      b += name.size() + 2;
      return body.substr(b, e - b);
    };
    code = tag("Code");
    message = tag("Message");
  }
  const std::string what = where + " answered HTTP " + std::to_string(status) + (code.empty() ? "" : " " + code) +
                           (message.empty() ? "" : ": " + message);
  const int native = static_cast<int>(status);
  auto has = [&](const char* s) { return code.find(s) != std::string::npos; };
  if (has("QueueDoesNotExist") || has("NonExistentQueue") || has("NotFound"))
    return Error(ErrorCode::NotFound, svc.scheme + " queue/topic '" + queue + "' does not exist at " +
                                          svc.loc.endpoint + " (create it, or give ?create=true): " + what, native);
  if (has("Throttl") || has("RequestThrottled") || has("ServiceUnavailable") || has("InternalError") ||
      has("InternalFailure") || status >= 500 || status == 429)
    return Error(ErrorCode::Unavailable, what, native, true);
  if (status == 403 || has("SignatureDoesNotMatch") || has("InvalidClientTokenId") || has("UnrecognizedClient") ||
      has("AccessDenied") || has("IncompleteSignature") || has("MissingAuthenticationToken") || has("ExpiredToken") ||
      has("InvalidSignature"))
    return Error(ErrorCode::InvalidArgument,
                 svc.scheme + ": AWS refused the credentials of access key id " + svc.creds.key_id + " (from " +
                     svc.creds.source + "): " + what +
                     "; check that the secret key belongs to that key id, the region (" + svc.loc.region +
                     ") and the clock",
                 native, false);
  return Error(ErrorCode::InvalidArgument, what, native, false);
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

// An easy handle set up for one service, reused request after request (it
// keeps its connection alive). Used by one thread at a time.
class Easy {
 public:
  explicit Easy(const Service& svc) : svc_(svc) {
    h_ = curl_easy_init();
    if (!h_) throw Error(ErrorCode::Internal, "curl_easy_init failed");
    curl_easy_setopt(h_, CURLOPT_URL, (svc.loc.endpoint + "/").c_str());
    curl_easy_setopt(h_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h_, CURLOPT_AWS_SIGV4, svc.sigv4.c_str());
    curl_easy_setopt(h_, CURLOPT_USERNAME, svc.creds.key_id.c_str());
    curl_easy_setopt(h_, CURLOPT_PASSWORD, svc.creds.secret.c_str());
    curl_easy_setopt(h_, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h_, CURLOPT_WRITEDATA, &response_);
    curl_easy_setopt(h_, CURLOPT_ERRORBUFFER, error_);
    curl_easy_setopt(h_, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h_, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h_, CURLOPT_PRIVATE, this);
  }
  ~Easy() {
    curl_easy_cleanup(h_);
    if (headers_) curl_slist_free_all(headers_);
  }
  Easy(const Easy&) = delete;
  Easy& operator=(const Easy&) = delete;

  CURL* handle() const { return h_; }

  // Sets up one POST of `body` (kept until the next prepare) for `action`.
  void prepare(const std::string& action, std::string body, std::chrono::milliseconds timeout) {
    action_ = action;
    request_ = std::move(body);
    response_.clear();
    error_[0] = 0;
    if (headers_) curl_slist_free_all(headers_);
    headers_ = nullptr;
    if (!svc_.target_prefix.empty()) {
      headers_ = curl_slist_append(headers_, "Content-Type: application/x-amz-json-1.0");
      headers_ = curl_slist_append(headers_, ("X-Amz-Target: " + svc_.target_prefix + action).c_str());
    } else {
      headers_ = curl_slist_append(headers_, "Content-Type: application/x-www-form-urlencoded");
    }
    if (!svc_.creds.token.empty())
      headers_ = curl_slist_append(headers_, ("X-Amz-Security-Token: " + svc_.creds.token).c_str());
    // No "Expect:" header to turn 100-continue off: libcurl 7.88 would sign
    // it although it never sends it. Our bodies stay below the 1 MiB from
    // which libcurl asks for 100-continue.
    curl_easy_setopt(h_, CURLOPT_HTTPHEADER, headers_);
    curl_easy_setopt(h_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request_.size()));
    curl_easy_setopt(h_, CURLOPT_POSTFIELDS, request_.data());
    curl_easy_setopt(h_, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  }

  // The outcome of the transfer that ended with `rc`: the JSON response, or
  // the error it means (set in `error`).
  json finish(CURLcode rc, std::optional<Error>& error, const std::string& queue) {
    long status = 0;
    curl_easy_getinfo(h_, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && status == 200) {
      json j = svc_.target_prefix.empty() ? json(response_) : json::parse(response_, nullptr, false);
      if (!j.is_discarded()) return j;
      error.emplace(ErrorCode::Unavailable, svc_.scheme + " " + action_ + " at " + svc_.loc.endpoint +
                                                " answered something that is not JSON", 0, true);
      return json();
    }
    error.emplace(map_error(svc_, action_, rc, error_, status, response_, queue));
    return json();
  }

 private:
  const Service& svc_;
  CURL* h_ = nullptr;
  curl_slist* headers_ = nullptr;
  std::string action_;
  std::string request_;
  std::string response_;
  char error_[CURL_ERROR_SIZE] = {0};
};

// A pool of easy handles driven by one multi handle: runs requests
// concurrently, up to the pool's size. Used by one thread at a time, except
// wake(), which any thread may call to interrupt run().
class Pool {
 public:
  Pool(const Service& svc, std::size_t size) : svc_(svc), size_(std::max<std::size_t>(1, size)) {
    m_ = curl_multi_init();
    if (!m_) throw Error(ErrorCode::Internal, "curl_multi_init failed");
  }
  ~Pool() {
    easies_.clear();
    curl_multi_cleanup(m_);
  }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  struct Call {
    std::string action;
    std::string body;
    json result;
    std::optional<Error> error;
  };

  // Runs every call, at most size() at once; each ends with a result or an
  // error. `abort` (may be null) ends the run early: calls not done then fail
  // with Closed. Blocks until all are done.
  void run(std::vector<Call>& calls, std::chrono::milliseconds timeout, const std::atomic<bool>* abort,
           const std::string& queue) {
    while (easies_.size() < std::min(size_, calls.size())) easies_.push_back(std::make_unique<Easy>(svc_));
    std::vector<Easy*> idle;
    for (auto& e : easies_) idle.push_back(e.get());
    std::unordered_map<Easy*, std::size_t> running;
    std::size_t next = 0, done = 0;
    while (done < calls.size()) {
      while (next < calls.size() && !idle.empty()) {
        Easy* e = idle.back();
        idle.pop_back();
        e->prepare(calls[next].action, std::move(calls[next].body), timeout);
        curl_multi_add_handle(m_, e->handle());
        running[e] = next++;
      }
      if (abort && abort->load()) break;
      int still = 0;
      curl_multi_perform(m_, &still);
      while (CURLMsg* msg = curl_multi_info_read(m_, &still)) {
        if (msg->msg != CURLMSG_DONE) continue;
        Easy* e = nullptr;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&e));
        CURLcode rc = msg->data.result;
        curl_multi_remove_handle(m_, e->handle());
        auto& call = calls[running.at(e)];
        call.result = e->finish(rc, call.error, queue);
        running.erase(e);
        idle.push_back(e);
        ++done;
      }
      if (done < calls.size() && !(abort && abort->load())) curl_multi_poll(m_, nullptr, 0, 1000, nullptr);
    }
    // Aborted: what still runs is dropped (the handle closes its connection).
    for (auto& [e, index] : running) {
      curl_multi_remove_handle(m_, e->handle());
      calls[index].error.emplace(ErrorCode::Closed, svc_.scheme + " " + calls[index].action + " was interrupted: closed");
    }
    for (std::size_t i = next; i < calls.size(); ++i)
      calls[i].error.emplace(ErrorCode::Closed, svc_.scheme + " " + calls[i].action + " not sent: closed");
  }

  // One call, synchronously; throws its error.
  json call(const std::string& action, const json& body, std::chrono::milliseconds timeout, const std::string& queue,
            const std::atomic<bool>* abort = nullptr) {
    return call_raw(action, body.dump(), timeout, queue, abort);
  }
  // The same with the request body as it goes (SNS: a query string); the
  // result is the response's JSON, or (SNS) its XML text as a JSON string.
  json call_raw(const std::string& action, std::string body, std::chrono::milliseconds timeout,
                const std::string& queue, const std::atomic<bool>* abort = nullptr) {
    std::vector<Call> calls(1);
    calls[0].action = action;
    calls[0].body = std::move(body);
    run(calls, timeout, abort, queue);
    if (calls[0].error) throw *calls[0].error;
    return std::move(calls[0].result);
  }

  // Interrupts a run() in another thread (it then sees its abort flag).
  void wake() { curl_multi_wakeup(m_); }

 private:
  const Service& svc_;
  std::size_t size_;
  CURLM* m_ = nullptr;
  std::vector<std::unique_ptr<Easy>> easies_;
};

constexpr std::chrono::milliseconds kRequestTimeout{30000};

// ---------------------------------------------------------------- the queue

struct Queue {
  std::shared_ptr<Service> svc;
  std::string url;   // the QueueUrl
  bool fifo = false;
  bool fan_out = false;  // awssns://: every subscription has a queue of its own
  bool dead_letter = false;  // created with a redrive policy (dead_letter_queue=)
};

// `service`: "sqs" (JSON protocol) or "sns" (query protocol).
Service make_service(const Url& url, const OptionValues& o, const std::string& service) {
  Service s;
  s.scheme = url.scheme + "://";
  s.name = service;
  s.target_prefix = service == "sqs" ? "AmazonSQS." : "";
  s.loc = resolve_location(url, o, service);
  s.creds = resolve_credentials(url, o, url.scheme);
  s.sigv4 = "aws:amz:" + s.loc.region + ":" + service;
  return s;
}

// Finds (or creates, with `attrs` when given) the queue svc->loc.queue and
// checks that the credentials work: the first request of every sender and
// receiver.
Queue open_queue(std::shared_ptr<Service> svc, bool create, json attrs = json::object()) {
  global_init();
  Queue q;
  q.svc = std::move(svc);
  const auto& loc = q.svc->loc;
  q.fifo = ends_with(loc.queue, ".fifo");
  Pool pool(*q.svc, 1);
  if (create) {
    if (q.fifo) {
      attrs["FifoQueue"] = "true";
      attrs["ContentBasedDeduplication"] = "true";
    }
    json req = {{"QueueName", loc.queue}, {"Attributes", attrs}};
    q.url = pool.call("CreateQueue", req, kRequestTimeout, loc.queue).value("QueueUrl", std::string());
  } else if (!loc.account.empty()) {
    q.url = loc.endpoint + "/" + loc.account + "/" + loc.queue;
    pool.call("GetQueueAttributes", {{"QueueUrl", q.url}, {"AttributeNames", {"FifoQueue"}}}, kRequestTimeout,
              loc.queue);
  } else {
    json req = {{"QueueName", loc.queue}};
    q.url = pool.call("GetQueueUrl", req, kRequestTimeout, loc.queue).value("QueueUrl", std::string());
  }
  if (q.url.empty())
    throw Error(ErrorCode::Unavailable, q.svc->scheme + " " + loc.endpoint + " gave no QueueUrl for " + loc.queue, 0, true);
  return q;
}

Capabilities sqs_capabilities(bool fifo, bool fan_out, bool dead_letter = false) {
  Capabilities c;
  c.delivery_guarantee = "at-least-once";
  c.ordered_per_key = fifo;  // per MessageGroupId, the key
  c.key_affinity = fifo;     // a group in flight goes to no other consumer
  c.keys = true;
  c.nack = true;
  c.ack_deadline = true;  // the visibility timeout
  c.requeue_on_close = true;
  c.delivery_count = true;  // ApproximateReceiveCount
  c.competing_consumers = true;
  c.fan_out = fan_out;  // awssqs://: a queue is one group; awssns:// fans out
  c.headers = true;
  c.dead_letter = dead_letter;  // through the queue's redrive policy
  c.durable = true;
  c.request_reply = false;
  c.max_message_bytes = env::kMaxMessageBytes;
  return c;
}

json attributes_json(const std::vector<env::Attribute>& attrs) {
  json out = json::object();
  for (const auto& a : attrs) {
    if (a.binary()) out[a.name] = {{"DataType", a.type}, {"BinaryValue", b64_encode(a.value)}};
    else out[a.name] = {{"DataType", a.type}, {"StringValue", a.value}};
  }
  return out;
}

// A FIFO MessageGroupId for a key: the key itself when SQS takes it (1..128
// characters, alphanumeric or punctuation), else a hash of it (keys that
// collide only share a group: their order is still kept).
std::string group_id(const std::optional<std::string>& key) {
  if (!key || key->empty()) return "omnibus";
  bool ok = key->size() <= 128 && std::all_of(key->begin(), key->end(), [](char c) {
              return c > 0x20 && c < 0x7f;
            });
  if (ok) return *key;
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : *key) h = (h ^ c) * 1099511628211ull;
  char buf[32];
  std::snprintf(buf, sizeof buf, "omnibus-h%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// A batch call's per-message results, shared by SendMessageBatch and
// PublishBatch: a transport or service error fails every member (and a
// transport error marks the sender disconnected); otherwise each member gets
// its entry of `failed`, success when in `ok`, and Unavailable when the
// response named it nowhere (`no_result` says which call).
void report_batch(const Pool::Call& call, const std::vector<std::size_t>& members,
                  const std::unordered_map<std::size_t, Error>& failed, const std::unordered_map<std::size_t, bool>& ok,
                  const std::string& no_result, std::atomic<bool>& connected, const SendResultFn& on_result) {
  if (call.error) {
    if (call.error->code() == ErrorCode::Unavailable && call.error->native_code() < 100) connected = false;
    for (auto i : members) on_result(i, &*call.error);
    return;
  }
  connected = true;
  for (auto i : members) {
    if (auto f = failed.find(i); f != failed.end()) on_result(i, &f->second);
    else if (ok.count(i)) on_result(i, nullptr);
    else {
      Error err(ErrorCode::Unavailable, no_result, 0, true);
      on_result(i, &err);
    }
  }
}

class SqsSender : public Sender {
 public:
  SqsSender(Queue q, const OptionValues& o)
      : q_(std::move(q)), pool_(std::make_unique<Pool>(*q_.svc, static_cast<std::size_t>(o.get_int("max_in_flight")))),
        dedup_header_(o.get_string("dedup_header")) {
    if (!dedup_header_.empty() && !q_.fifo)
      throw Error(ErrorCode::InvalidArgument, "dedup_header=" + dedup_header_ + " needs a FIFO queue (a name ending in .fifo); " +
                                                  q_.svc->loc.queue + " is a standard queue");
  }

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    if (closed_) throw Error(ErrorCode::Closed, q_.svc->scheme + " sender is closed");
    // Requests of at most 10 entries and 256 KiB in all, as SQS requires.
    std::vector<std::vector<std::size_t>> chunks;
    std::vector<Pool::Call> calls;
    json entries = json::array();
    std::vector<std::size_t> members;
    std::size_t bytes = 0;
    auto flush = [&] {
      if (members.empty()) return;
      Pool::Call c;
      c.action = "SendMessageBatch";
      c.body = json{{"QueueUrl", q_.url}, {"Entries", std::move(entries)}}.dump();
      calls.push_back(std::move(c));
      chunks.push_back(std::move(members));
      entries = json::array();
      members.clear();
      bytes = 0;
    };
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto& m = batch[i];
      env::Encoded e = env::encode(m);
      const std::size_t size = e.bytes();
      if (size > env::kMaxMessageBytes) {
        Error err(ErrorCode::ResourceExhausted,
                  "message of " + std::to_string(m.payload->size()) + " payload bytes is " + std::to_string(size) +
                      " bytes as SQS counts it (body" + (e.body.size() != m.payload->size() ? ", base64-encoded," : "") +
                      " and attributes), over max_message_bytes=" + std::to_string(env::kMaxMessageBytes) + " of " +
                      q_.svc->scheme + q_.svc->loc.queue,
                  0, false);
        on_result(i, &err);
        continue;
      }
      json entry = {{"Id", std::to_string(i)}, {"MessageBody", std::move(e.body)}};
      if (!e.attributes.empty()) entry["MessageAttributes"] = attributes_json(e.attributes);
      if (q_.fifo) {
        entry["MessageGroupId"] = group_id(m.key);
        if (!dedup_header_.empty()) {
          auto h = std::find_if(m.headers.begin(), m.headers.end(), [&](const auto& kv) { return kv.first == dedup_header_; });
          if (h == m.headers.end() || h->second.empty() || h->second.size() > 128) {
            Error err(ErrorCode::InvalidArgument, "message has no header " + dedup_header_ +
                                                      " of 1..128 characters for its deduplication id (dedup_header)");
            on_result(i, &err);
            continue;
          }
          entry["MessageDeduplicationId"] = h->second;
        }
      }
      if (members.size() == kBatchEntries || bytes + size > env::kMaxMessageBytes) flush();
      entries.push_back(std::move(entry));
      members.push_back(i);
      bytes += size;
    }
    flush();
    if (calls.empty()) return;
    pool_->run(calls, kRequestTimeout, nullptr, q_.svc->loc.queue);
    for (std::size_t c = 0; c < calls.size(); ++c) report(calls[c], chunks[c], on_result);
  }

  Capabilities capabilities() const override { return sqs_capabilities(q_.fifo, q_.fan_out, q_.dead_letter); }
  std::optional<bool> connected() const override { return connected_.load(); }
  // Releases the connections at once: the object may live on (Python).
  void close() override {
    closed_ = true;
    pool_.reset();
  }

 private:
  void report(const Pool::Call& call, const std::vector<std::size_t>& members, const SendResultFn& on_result) {
    std::unordered_map<std::size_t, Error> failed;
    std::unordered_map<std::size_t, bool> ok;
    if (!call.error) parse_results(call.result, failed, ok);
    report_batch(call, members, failed, ok, q_.svc->scheme + " SendMessageBatch gave no result for a message", connected_,
                 on_result);
  }

  void parse_results(const json& result, std::unordered_map<std::size_t, Error>& failed,
                     std::unordered_map<std::size_t, bool>& ok) const {
    for (const auto& f : result.value("Failed", json::array())) {
      std::size_t id = std::stoul(f.value("Id", std::string("0")));
      std::string code = f.value("Code", std::string());
      std::string text = q_.svc->scheme + q_.svc->loc.queue + " refused the message: " + code + ": " +
                         f.value("Message", std::string());
      bool sender = f.value("SenderFault", false);
      failed.insert_or_assign(id, Error(sender ? ErrorCode::InvalidArgument : ErrorCode::Unavailable, text, 0, !sender));
    }
    for (const auto& s : result.value("Successful", json::array())) ok[std::stoul(s.value("Id", std::string("0")))] = true;
  }

  Queue q_;
  std::unique_ptr<Pool> pool_;
  std::string dedup_header_;
  bool closed_ = false;
  std::atomic<bool> connected_{true};
};

class SqsReceiver : public Receiver, public std::enable_shared_from_this<SqsReceiver> {
 public:
  SqsReceiver(Queue q, const OptionValues& o)
      : q_(std::move(q)),
        visibility_s_((o.get_int("ack_deadline_ms") + 999) / 1000),
        wait_s_(o.get_int("wait_seconds")),
        pollers_n_(static_cast<std::size_t>(o.get_int("pollers"))),
        control_(std::make_unique<Pool>(*q_.svc, 4)) {}

  // Runs at the end of close(), once (awssns://: unsubscribe and delete a private queue).
  void on_close(std::function<void()> fn) { on_close_ = std::move(fn); }

  // Started once the receiver is owned by a shared_ptr (messages hold one).
  void start() {
    for (std::size_t i = 0; i < pollers_n_; ++i) pools_.push_back(std::make_unique<Pool>(*q_.svc, 1));
    running_ = pollers_n_;
    for (std::size_t i = 0; i < pollers_n_; ++i)
      threads_.emplace_back([this, i] {
        poll(*pools_[i]);
        std::lock_guard lock(mu_);
        --running_;
        room_cv_.notify_all();
      });
  }

  ~SqsReceiver() override { close(); }

  std::vector<MessagePtr> receive_batch(std::size_t max, std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !buffer_.empty() || closed_ || fatal_; });
    if (closed_) throw Error(ErrorCode::Closed, q_.svc->scheme + " receiver is closed");
    std::vector<MessagePtr> out;
    if (buffer_.empty() && fatal_) throw *fatal_;
    while (!buffer_.empty() && out.size() < max) {
      out.push_back(std::move(buffer_.front()));
      buffer_.pop_front();
    }
    room_cv_.notify_all();
    return out;
  }

  void ack(const std::vector<std::uint64_t>& ids) override { settle(ids, "DeleteMessageBatch", false); }
  void nack(const std::vector<std::uint64_t>& ids) override { settle(ids, "ChangeMessageVisibilityBatch", false); }

  Capabilities capabilities() const override { return sqs_capabilities(q_.fifo, q_.fan_out, q_.dead_letter); }
  std::optional<bool> connected() const override { return connected_.load(); }

  void close() override {
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;  // no new polls
      cv_.notify_all();
      room_cv_.notify_all();
    }
    {
      // Polls in flight end by themselves (within wait_seconds): a poll cut
      // off mid-way still takes messages on the server (SQS and moto alike),
      // which then stay invisible for the visibility timeout. Only a poll
      // that hangs past that (an unreachable endpoint) is aborted.
      std::unique_lock lock(mu_);
      room_cv_.wait_for(lock, std::chrono::seconds(wait_s_ + 5), [&] { return running_ == 0; });
    }
    abort_ = true;
    for (auto& p : pools_) p->wake();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    // Unacked and buffered messages go back to the queue at once, instead of
    // after their visibility timeout. Best effort: SQS redelivers them anyway.
    std::vector<std::uint64_t> ids;
    {
      std::lock_guard lock(mu_);
      for (const auto& [id, _] : receipts_) ids.push_back(id);
      buffer_.clear();  // they hold this receiver
    }
    try {
      settle(ids, "ChangeMessageVisibilityBatch", true);
    } catch (const Error&) {
    }
    {
      std::lock_guard lock(mu_);
      receipts_.clear();
    }
    // The connections go now: the object may live on (Python).
    pools_.clear();
    {
      std::lock_guard lock(control_mu_);
      control_.reset();
    }
    if (auto fn = std::move(on_close_)) {
      try {
        fn();
      } catch (const Error&) {
        // Best effort: an orphaned private queue costs nothing until used.
      }
    }
  }

 private:
  void poll(Pool& pool) {
    const std::size_t capacity = 10 * pollers_n_;
    int failures = 0;
    for (;;) {
      {
        std::unique_lock lock(mu_);
        room_cv_.wait(lock, [&] { return closed_ || buffer_.size() < capacity; });
        if (closed_) return;
      }
      json req = {{"QueueUrl", q_.url},
                  {"MaxNumberOfMessages", static_cast<int>(kBatchEntries)},
                  {"WaitTimeSeconds", wait_s_},
                  {"VisibilityTimeout", visibility_s_},
                  {"MessageAttributeNames", {"All"}},
                  {"MessageSystemAttributeNames", {"ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"}},
                  {"AttributeNames", {"ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"}}};
      json resp;
      try {
        resp = pool.call("ReceiveMessage", req, std::chrono::seconds(wait_s_ + 20), q_.svc->loc.queue, &abort_);
      } catch (const Error& e) {
        if (e.code() == ErrorCode::Closed) return;
        std::unique_lock lock(mu_);
        if (!e.retryable()) {  // the queue was deleted, the key revoked: nothing to wait for
          fatal_.emplace(e);
          cv_.notify_all();
          return;
        }
        connected_ = false;
        // Back off (up to 5 s), as SQS asks of a throttled or failing client.
        auto pause = std::chrono::milliseconds(std::min(5000, 100 << std::min(failures++, 6)));
        room_cv_.wait_for(lock, pause, [&] { return closed_; });
        continue;
      }
      failures = 0;
      connected_ = true;
      deliver(resp.value("Messages", json::array()));
    }
  }

  void deliver(const json& messages) {
    if (messages.empty()) return;
    auto self = weak_from_this().lock();
    if (!self) return;  // being destroyed without close(): nobody receives any more
    std::vector<MessagePtr> got;
    std::vector<std::pair<std::uint64_t, std::string>> receipts;
    for (const auto& m : messages) {
      std::vector<env::Attribute> attrs;
      if (auto it = m.find("MessageAttributes"); it != m.end() && it->is_object()) {
        for (const auto& [name, v] : it->items()) {
          env::Attribute a{name, v.value("DataType", std::string("String")), {}};
          if (a.binary()) a.value = b64_decode(v.value("BinaryValue", std::string())).value_or(std::string());
          else a.value = v.value("StringValue", std::string());
          attrs.push_back(std::move(a));
        }
      }
      env::Decoded d = env::decode(m.value("Body", std::string()), std::move(attrs));
      const json sys = m.value("Attributes", json::object());
      OutMessage data;
      data.payload = make_bytes(std::move(d.payload));
      data.key = std::move(d.key);
      if (!data.key && d.foreign && q_.fifo && sys.contains("MessageGroupId"))
        data.key = sys.value("MessageGroupId", std::string());
      data.headers = std::move(d.headers);
      std::uint32_t attempt = 1;
      try {
        data.timestamp_ms = std::stoll(sys.value("SentTimestamp", std::string("0")));
        attempt = static_cast<std::uint32_t>(std::stoul(sys.value("ApproximateReceiveCount", std::string("1"))));
      } catch (const std::exception&) {
      }
      if (data.timestamp_ms == 0) data.timestamp_ms = now_ms();
      const std::uint64_t id = next_id_++;
      receipts.emplace_back(id, m.value("ReceiptHandle", std::string()));
      got.push_back(std::make_shared<Message>(std::move(data), q_.svc->loc.queue, std::max<std::uint32_t>(attempt, 1),
                                              self, id));
    }
    std::lock_guard lock(mu_);
    for (auto& r : receipts) receipts_.emplace(r.first, std::move(r.second));
    for (auto& g : got) buffer_.push_back(std::move(g));
    cv_.notify_all();
  }

  // Deletes (ack) or makes visible again (nack, close) the messages of `ids`
  // that this receiver still holds, 10 per request, the requests concurrently.
  void settle(const std::vector<std::uint64_t>& ids, const char* action, bool closing) {
    std::vector<std::string> handles;
    {
      std::lock_guard lock(mu_);
      if (closed_ && !closing)
        throw Error(ErrorCode::Closed, q_.svc->scheme + " subscriber is closed; its unacked messages were returned for redelivery");
      for (auto id : ids) {
        auto it = receipts_.find(id);
        if (it == receipts_.end()) continue;  // unknown or settled already
        handles.push_back(std::move(it->second));
        receipts_.erase(it);
      }
    }
    if (handles.empty()) return;
    const bool remove = std::string(action) == "DeleteMessageBatch";
    std::vector<Pool::Call> calls;
    for (std::size_t i = 0; i < handles.size(); i += kBatchEntries) {
      json entries = json::array();
      for (std::size_t j = i; j < std::min(handles.size(), i + kBatchEntries); ++j) {
        json e = {{"Id", std::to_string(j)}, {"ReceiptHandle", handles[j]}};
        if (!remove) e["VisibilityTimeout"] = 0;
        entries.push_back(std::move(e));
      }
      Pool::Call c;
      c.action = action;
      c.body = json{{"QueueUrl", q_.url}, {"Entries", std::move(entries)}}.dump();
      calls.push_back(std::move(c));
    }
    std::lock_guard lock(control_mu_);
    if (!control_) throw Error(ErrorCode::Closed, q_.svc->scheme + " subscriber is closed");
    control_->run(calls, kRequestTimeout, nullptr, q_.svc->loc.queue);
    // A failed entry (a receipt handle that expired with its visibility
    // timeout) is left to SQS: the message comes again, as at-least-once allows.
    for (auto& c : calls)
      if (c.error) throw *c.error;
  }

  Queue q_;
  const std::int64_t visibility_s_;
  const std::int64_t wait_s_;
  const std::size_t pollers_n_;
  std::vector<std::unique_ptr<Pool>> pools_;
  std::vector<std::thread> threads_;
  std::atomic<bool> abort_{false};
  std::atomic<bool> connected_{true};
  std::atomic<std::uint64_t> next_id_{1};

  std::mutex mu_;  // guards what follows
  std::condition_variable cv_;       // buffer_ got messages, or closed/fatal
  std::condition_variable room_cv_;  // buffer_ has room, or closed
  std::deque<MessagePtr> buffer_;
  std::unordered_map<std::uint64_t, std::string> receipts_;  // unsettled: ack id -> receipt handle
  std::optional<Error> fatal_;
  bool closed_ = false;
  std::size_t running_ = 0;  // poller threads not ended yet

  std::mutex control_mu_;  // guards control_
  std::unique_ptr<Pool> control_;
  std::function<void()> on_close_;
};

// `service`: "sqs" or "sns"; `what`: what create= creates.
std::vector<OptionSpec> common_options(const std::string& service, const std::string& what) {
  const std::string upper = service == "sqs" ? "SQS" : "SNS";
  return {
      {"region", OptionType::String, "", "AWS region; default: from the host name, AWS_REGION or AWS_DEFAULT_REGION"},
      {"endpoint", OptionType::String, "",
       "service endpoint URL (moto, LocalStack, ElasticMQ, VPC endpoints); default: the URL's host, "
       "AWS_ENDPOINT_URL_" + upper + ", AWS_ENDPOINT_URL, else https://" + service + ".REGION.amazonaws.com"},
      {"profile", OptionType::String, "", "profile of the shared credentials file; default AWS_PROFILE or 'default'"},
      {"create", OptionType::Bool, "false",
       "create " + what + " when missing; false: a missing one is NotFound"},
  };
}

// The queue of an awssqs:// URL; with dead_letter_queue= (and create=true)
// that queue is created first and the URL's queue gets a redrive policy to it.
Queue open_sqs(const Url& url, const OptionValues& o) {
  auto svc = std::make_shared<Service>(make_service(url, o, "sqs"));
  const std::string dlq = o.get_string("dead_letter_queue");
  json attrs = json::object();
  if (!dlq.empty()) {
    if (!o.get_bool("create"))
      throw Error(ErrorCode::InvalidArgument,
                  "dead_letter_queue=" + dlq + " needs create=true: omnibus sets the redrive policy when it creates " +
                      svc->loc.queue + " (for an existing queue, set it in SQS)");
    auto dsvc = std::make_shared<Service>(*svc);
    dsvc->loc.queue = dlq;
    Queue dead = open_queue(dsvc, true);
    Pool pool(*svc, 1);
    std::string arn = pool.call("GetQueueAttributes", {{"QueueUrl", dead.url}, {"AttributeNames", {"QueueArn"}}},
                                kRequestTimeout, dlq)
                          .value("Attributes", json::object())
                          .value("QueueArn", std::string());
    attrs["RedrivePolicy"] =
        json{{"deadLetterTargetArn", arn}, {"maxReceiveCount", o.get_int("max_receive_count")}}.dump();
  }
  Queue q = open_queue(svc, o.get_bool("create"), attrs);
  q.dead_letter = !dlq.empty();
  return q;
}

// Options of both sides: either may create the queue.
void add_dead_letter_options(std::vector<OptionSpec>& o) {
  o.push_back({"dead_letter_queue", OptionType::String, "",
               "with create=true: create this queue too and give the URL's queue a redrive policy to it, so that "
               "a message received max_receive_count times goes there (nack counts)"});
  o.push_back({"max_receive_count", OptionType::Int, "5", "receives before a message goes to dead_letter_queue", {},
               1, 1000});
}

class SqsDriver : public Driver {
 public:
  std::string scheme() const override { return "awssqs"; }
  std::string description() const override {
    return "Amazon SQS (libcurl, SigV4): SendMessageBatch, long-polled ReceiveMessage, ack = delete, nack = "
           "visibility 0; standard and FIFO queues; a queue is one group (no fan-out)";
  }
  std::vector<OptionSpec> sender_options() const override {
    auto o = common_options("sqs", "the queue (CreateQueue; a .fifo name makes a FIFO queue with content-based "
                                   "deduplication)");
    o.push_back({"max_in_flight", OptionType::Int, "8",
                 "SendMessageBatch requests of one publish batch sent concurrently (one connection each)", {}, 1, 64});
    add_dead_letter_options(o);
    o.push_back({"dedup_header", OptionType::String, "",
                 "FIFO queues: the header whose value is the MessageDeduplicationId (SQS drops a repeat within 5 "
                 "minutes); empty: the queue's content-based deduplication"});
    return o;
  }
  std::vector<OptionSpec> receiver_options() const override {
    auto o = common_options("sqs", "the queue (CreateQueue; a .fifo name makes a FIFO queue with content-based "
                                   "deduplication)");
    add_dead_letter_options(o);
    o.push_back({"group", OptionType::String, "",
                 "accepted for portable code: an SQS queue is one group, its subscribers always share its "
                 "messages, whatever the value (for a copy per subscription use awssns:// with a queue each)"});
    o.push_back({"ack_deadline_ms", OptionType::Int, "30000",
                 "visibility timeout: an unacked message is redelivered after this long (rounded up to whole "
                 "seconds, SQS's unit)", {}, 0, 43200000});
    o.push_back({"wait_seconds", OptionType::Int, "1",
                 "long-poll time of each ReceiveMessage (SQS allows up to 20); close() waits for the polls in flight, "
                 "so up to this long. More costs fewer requests on an idle queue (SQS bills each)", {}, 0, 20});
    o.push_back({"pollers", OptionType::Int, "2", "ReceiveMessage requests in flight at once (threads)", {}, 1, 32});
    return o;
  }
  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    return std::make_shared<SqsSender>(open_sqs(url, options), options);
  }
  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options,
                                          const ReceiverSettings&) override {
    auto r = std::make_shared<SqsReceiver>(open_sqs(url, options), options);
    r->start();
    return r;
  }
};


// ---------------------------------------------------------------- awssns://
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
    auto r = std::make_shared<SqsReceiver>(q, options);
    if (!named) {
      // A private queue goes with its subscriber.
      auto sns_svc = t.svc;
      auto queue_url = q.url;
      auto sqs_svc = q.svc;
      r->on_close([sns_svc, sqs_svc, subscription, queue_url] {
        Pool sp(*sns_svc, 1);
        if (!subscription.empty())
          sp.call_raw("Unsubscribe", Form("Unsubscribe").add("SubscriptionArn", subscription).text, kRequestTimeout,
                      sns_svc->loc.queue);
        Pool qp(*sqs_svc, 1);
        qp.call("DeleteQueue", {{"QueueUrl", queue_url}}, kRequestTimeout, sqs_svc->loc.queue);
      });
    }
    r->start();
    return r;
  }
};

}  // namespace

std::shared_ptr<Driver> make_awssqs_driver() { return std::make_shared<SqsDriver>(); }
std::shared_ptr<Driver> make_awssns_driver() { return std::make_shared<SnsDriver>(); }

}  // namespace omnibus
