#pragma once
// What awssqs:// and awssns:// share: where the service is, who signs, and
// requests over HTTP(S) with libcurl, signed with SigV4 by libcurl itself
// (CURLOPT_AWS_SIGV4). Both speak to AWS through a Pool.

#include "core/tls.hpp"
#include <curl/curl.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "omnibus/error.hpp"
#include "omnibus/options.hpp"
#include "omnibus/url.hpp"

namespace omnibus::detail::aws {

using json = nlohmann::json;

// The environment variable `name`, or null when unset or empty.
const char* getenv_nonempty(const char* name);
bool ends_with(const std::string& s, const std::string& suffix);
// curl_global_init, once per process. Thread-safe.
void global_init();

struct Credentials {
  std::string key_id;
  std::string secret;
  std::string token;
  std::string source;  // for messages: where they came from
};

// The URL's userinfo, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
// (/AWS_SESSION_TOKEN), else the shared credentials file. Throws
// InvalidArgument naming every place it looked; the secret is never in it.
Credentials resolve_credentials(const Url& url, const OptionValues& o, const std::string& scheme);

struct Location {
  std::string endpoint;   // scheme://host[:port], no trailing '/'
  std::string region;
  std::string account;    // empty in the short form
  std::string queue;      // the queue name (or, for awssns://, the topic name)
};

// `service`: "sqs" or "sns" (host prefix and AWS_ENDPOINT_URL_<SERVICE>).
// Throws InvalidArgument for a URL of the wrong shape or no region.
Location resolve_location(const Url& url, const OptionValues& o, const std::string& service);

// One AWS service as seen by one client: where, who, and how to turn a
// response into JSON or an Error. Immutable, shared by the handles.
struct Service {
  std::string scheme;       // "awssqs://", for messages
  std::string name;         // "sqs" or "sns"
  std::string target_prefix;  // "AmazonSQS." (JSON protocol), empty for SNS's query protocol
  Location loc;
  Credentials creds;
  std::string sigv4;        // "aws:amz:REGION:SERVICE"
  TlsFiles tls;             // for an https:// endpoint: its CA, a client certificate, verification
};

// `service`: "sqs" (JSON protocol) or "sns" (query protocol). Throws as
// resolve_location and resolve_credentials do.
Service make_service(const Url& url, const OptionValues& o, const std::string& service);

// Options of both drivers, both sides. `service`: "sqs" or "sns"; `what`:
// what create= creates.
std::vector<OptionSpec> common_options(const std::string& service, const std::string& what);

constexpr std::chrono::milliseconds kRequestTimeout{30000};

class Easy;  // one curl easy handle set up for a Service (aws.cpp)

// A pool of easy handles driven by one multi handle: runs requests
// concurrently, up to the pool's size. Used by one thread at a time, except
// wake(), which any thread may call to interrupt run(). `svc` must outlive it.
class Pool {
 public:
  Pool(const Service& svc, std::size_t size);  // throws Internal when curl cannot
  ~Pool();
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
  // with Closed. Blocks until all are done; throws nothing itself.
  void run(std::vector<Call>& calls, std::chrono::milliseconds timeout, const std::atomic<bool>* abort,
           const std::string& queue);

  // One call, synchronously; throws its error.
  json call(const std::string& action, const json& body, std::chrono::milliseconds timeout, const std::string& queue,
            const std::atomic<bool>* abort = nullptr) {
    return call_raw(action, body.dump(), timeout, queue, abort);
  }
  // The same with the request body as it goes (SNS: a query string); the
  // result is the response's JSON, or (SNS) its XML text as a JSON string.
  json call_raw(const std::string& action, std::string body, std::chrono::milliseconds timeout,
                const std::string& queue, const std::atomic<bool>* abort = nullptr);

  // Interrupts a run() in another thread (it then sees its abort flag).
  void wake();

 private:
  const Service& svc_;
  std::size_t size_;
  CURLM* m_ = nullptr;
  std::vector<std::unique_ptr<Easy>> easies_;
};

}  // namespace omnibus::detail::aws
