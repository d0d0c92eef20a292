// What awssqs:// and awssns:// share (aws.hpp): credentials, endpoints, and
// SigV4-signed HTTP requests with libcurl.

#include "drivers/awssqs/aws.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <unordered_map>

namespace omnibus::detail::aws {
namespace {

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

}  // namespace

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
    // TLS of an https:// endpoint (curl checks certificate and host name by default).
    if (!svc.tls.ca.empty()) curl_easy_setopt(h_, CURLOPT_CAINFO, svc.tls.ca.c_str());
    if (!svc.tls.cert.empty()) {
      curl_easy_setopt(h_, CURLOPT_SSLCERT, svc.tls.cert.c_str());
      curl_easy_setopt(h_, CURLOPT_SSLKEY, svc.tls.key.c_str());
    }
    if (!svc.tls.verify) {
      curl_easy_setopt(h_, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(h_, CURLOPT_SSL_VERIFYHOST, 0L);
    }
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

const char* getenv_nonempty(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
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

// `service`: "sqs" (JSON protocol) or "sns" (query protocol).
Service make_service(const Url& url, const OptionValues& o, const std::string& service) {
  Service s;
  s.scheme = url.scheme + "://";
  s.name = service;
  s.target_prefix = service == "sqs" ? "AmazonSQS." : "";
  s.loc = resolve_location(url, o, service);
  s.creds = resolve_credentials(url, o, url.scheme);
  s.tls = read_tls_options(o, url.scheme, url.text);
  if (s.tls.any_given() && s.loc.endpoint.rfind("https://", 0) != 0)
    throw Error(ErrorCode::InvalidArgument, url.scheme + ":// URL '" + url.text + "' has TLS options, but its endpoint " +
                                                s.loc.endpoint + " is plaintext http://; give an https:// endpoint");
  s.sigv4 = "aws:amz:" + s.loc.region + ":" + service;
  return s;
}

// `service`: "sqs" or "sns"; `what`: what create= creates.
std::vector<OptionSpec> common_options(const std::string& service, const std::string& what) {
  const std::string upper = service == "sqs" ? "SQS" : "SNS";
  std::vector<OptionSpec> specs{
      {"region", OptionType::String, "", "AWS region; default: from the host name, AWS_REGION or AWS_DEFAULT_REGION"},
      {"endpoint", OptionType::String, "",
       "service endpoint URL (moto, LocalStack, ElasticMQ, VPC endpoints); default: the URL's host, "
       "AWS_ENDPOINT_URL_" + upper + ", AWS_ENDPOINT_URL, else https://" + service + ".REGION.amazonaws.com"},
      {"profile", OptionType::String, "", "profile of the shared credentials file; default AWS_PROFILE or 'default'"},
      {"create", OptionType::Bool, "false",
       "create " + what + " when missing; false: a missing one is NotFound"},
  };
  for (auto& spec : tls_option_specs("aws" + service)) specs.push_back(std::move(spec));
  return specs;
}

Pool::Pool(const Service& svc, std::size_t size) : svc_(svc), size_(std::max<std::size_t>(1, size)) {
  m_ = curl_multi_init();
  if (!m_) throw Error(ErrorCode::Internal, "curl_multi_init failed");
}

Pool::~Pool() {
  easies_.clear();
  curl_multi_cleanup(m_);
}

void Pool::run(std::vector<Call>& calls, std::chrono::milliseconds timeout, const std::atomic<bool>* abort,
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

json Pool::call_raw(const std::string& action, std::string body, std::chrono::milliseconds timeout,
              const std::string& queue, const std::atomic<bool>* abort) {
  std::vector<Call> calls(1);
  calls[0].action = action;
  calls[0].body = std::move(body);
  run(calls, timeout, abort, queue);
  if (calls[0].error) throw *calls[0].error;
  return std::move(calls[0].result);
}

void Pool::wake() { curl_multi_wakeup(m_); }

}  // namespace omnibus::detail::aws
