#include "tillsync/hq_service.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include "protocol.h"
#include "tillsync/local_hq_link.h"
#include "tillsync/transport/socket.h"
#include "tillsync/validation.h"

namespace tillsync {
namespace {

using protocol::MsgType;
using SteadyClock = std::chrono::steady_clock;

// The node id a request claims; requests name their node so HQ can authorize them.
template <class Msg>
Status check_node(const Msg& m) {
  return validate_node_id(m.node);
}

}  // namespace

Result<Allowlist> load_allowlist(const std::string& file) {
  std::ifstream in(file);
  if (!in) return Status::InvalidInput("allowlist", "cannot read allowlist file " + file);
  Allowlist list;
  std::map<std::string, std::string> owners;  // key -> node
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.size() > 1000)
      return Status::InvalidInput("allowlist", file + ":" + std::to_string(number) + ": line too long");
    std::istringstream words(line);
    std::string node, key, extra;
    if (!(words >> node) || node[0] == '#') continue;
    const std::string where = file + ":" + std::to_string(number) + ": ";
    if (!(words >> key) || (words >> extra))
      return Status::InvalidInput("allowlist", where + "expected 'NODE_ID PUBLIC_KEY'");
    if (Status valid = validate_node_id(node); !valid.ok())
      return Status::InvalidInput("allowlist", where + valid.message());
    if (!transport::is_z85_key(key))
      return Status::InvalidInput("allowlist", where + "not a CurveZMQ public key (40 Z85 characters)");
    if (!list.emplace(node, key).second)
      return Status::InvalidInput("allowlist", where + node + " is listed twice");
    if (!owners.emplace(key, node).second)
      return Status::InvalidInput("allowlist", where + "the key of " + node + " is also given to " + owners[key]);
  }
  return list;
}

struct HqService::Impl {
  std::unique_ptr<Headquarters> hq;
  HqServiceOptions options;
  transport::Context context;
  std::optional<transport::Server> server;
  std::atomic<bool> stopping{false};
  HqServiceStats stats;
  SteadyClock::time_point next_job = SteadyClock::now();
  std::map<std::string, std::string> node_by_key;  // the allowlist, by key
  std::atomic<bool> reload_requested{false};

  // A till whose clock runs too far ahead is told to the operator once per change.
  std::map<std::string, std::int64_t> clock_told;
  void note_clock(const std::string& node, std::int64_t ahead_ms) {
    auto [it, fresh] = clock_told.try_emplace(node, 0);
    const std::int64_t minutes = ahead_ms / 60'000;
    if (!fresh && it->second / 60'000 == minutes) return;
    if (fresh && ahead_ms == 0) return;
    it->second = ahead_ms;
    if (ahead_ms > 0)
      std::cerr << "tillsync: the clock of terminal " << node << " is " << ahead_ms / 1000
                << " s ahead of HQ's; its operations are ordered as if stamped when HQ received them "
                   "(plus the allowed offset). Fix that till's clock (hq terminals shows it)"
                << std::endl;
    else
      std::cerr << "tillsync: the clock of terminal " << node << " agrees with HQ's again" << std::endl;
  }

  void set_allowlist(const Allowlist& list) {
    node_by_key.clear();
    for (const auto& [node, key] : list) node_by_key.emplace(key, node);
  }

  bool authorize(const std::string& key, std::string* node) const {
    auto it = node_by_key.find(key);
    if (it == node_by_key.end()) return false;
    *node = it->second;
    return true;
  }

  // Refusals are logged with the peer's address, at most kRefusalLogsPerMinute a minute
  // (a flood of them must not fill the disk); every one is counted.
  static constexpr int kRefusalLogsPerMinute = 20;
  std::int64_t refusal_minute = -1;
  int refusals_logged = 0;
  std::uint64_t refusals_unlogged = 0;
  void log_refusal(const std::string& peer_address, const std::string& reason) {
    const std::int64_t minute = now_ms() / 60'000;
    if (minute != refusal_minute) {
      if (refusals_unlogged > 0)
        std::cerr << "tillsync: " << refusals_unlogged << " more refusal(s) not logged in the last minute"
                  << std::endl;
      refusal_minute = minute;
      refusals_logged = 0;
      refusals_unlogged = 0;
    }
    if (refusals_logged >= kRefusalLogsPerMinute) {
      ++refusals_unlogged;
      return;
    }
    ++refusals_logged;
    std::cerr << "tillsync: refused " << (peer_address.empty() ? std::string("a local peer") : peer_address)
              << ": " << reason << std::endl;
  }

  SteadyClock::time_point started = SteadyClock::now();
  std::int64_t now_ms() const {
    if (options.rate_clock != nullptr) return options.rate_clock->now_ms();
    return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - started).count();
  }

  // One token bucket per node: tokens refill at node_requests_per_second up to node_burst.
  struct Bucket {
    double tokens = 0;
    std::int64_t at_ms = 0;
  };
  std::map<std::string, Bucket> buckets;
  static constexpr std::size_t kMaxBuckets = 20'000;
  Status take_token(const std::string& key) {
    const double rate = options.node_requests_per_second;
    if (rate <= 0) return Status::Ok();
    const double burst = std::max(1, options.node_burst);
    const std::int64_t now = now_ms();
    auto refill = [&](Bucket& b) {
      if (now > b.at_ms) b.tokens = std::min(burst, b.tokens + static_cast<double>(now - b.at_ms) * rate / 1000.0);
      b.at_ms = std::max(b.at_ms, now);
    };
    if (buckets.size() >= kMaxBuckets && !buckets.contains(key)) {
      // Forget the buckets that are full again: they hold nothing a new one would not.
      for (auto it = buckets.begin(); it != buckets.end();) {
        refill(it->second);
        it = it->second.tokens >= burst ? buckets.erase(it) : std::next(it);
      }
    }
    auto [it, fresh] = buckets.try_emplace(key, Bucket{burst, now});
    Bucket& b = it->second;
    refill(b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return Status::Ok();
    }
    ++stats.rate_limited;
    const auto wait_ms = static_cast<std::int64_t>(std::ceil((1 - b.tokens) * 1000.0 / rate));
    return Status::Busy("node " + key + " sends requests faster than HQ serves one node (" +
                            std::to_string(static_cast<long long>(rate)) + " a second, bursts of " +
                            std::to_string(static_cast<int>(burst)) + "); nothing was done",
                        std::max<std::int64_t>(1, wait_ms));
  }

  // With CURVE, a request must claim the node its key authenticated (ping may claim none).
  template <class Msg>
  Status check_identity(const transport::Request& req, const Msg& m, bool may_be_anonymous = false) {
    if (!options.curve) return Status::Ok();
    if (m.node == req.authenticated_node || (may_be_anonymous && m.node.empty())) return Status::Ok();
    ++stats.unauthorized;
    log_refusal(req.peer_address, "request type " + std::to_string(int{req.frame.type}) +
                                      ": connection authenticated as " + req.authenticated_node +
                                      " claimed another node");
    return Status(Code::unauthorized, "node " + req.authenticated_node +
                                          " may not act as node '" + m.node.substr(0, 80) + "'");
  }

  // A request may be handled: its node id is valid, it is the node the connection
  // authenticated (CURVE), and the node is within its request rate.
  template <class Msg>
  Status admit(const transport::Request& req, const Msg& m, bool may_be_anonymous = false) {
    if (!(may_be_anonymous && m.node.empty())) TS_RETURN_IF_ERROR(check_node(m));
    TS_RETURN_IF_ERROR(check_identity(req, m, may_be_anonymous));
    return take_token(m.node.empty() ? "@" + req.peer_address : m.node);
  }

  // Handles one request; returns the reply (type, body) or a domain error to send back.
  Result<std::pair<std::uint8_t, std::string>> handle(const transport::Request& req) {
    const std::string_view body = req.frame.body;
    auto reply = [](MsgType t, std::string bytes) {
      return std::pair<std::uint8_t, std::string>(protocol::reply_type(t), std::move(bytes));
    };
    auto customer_reply = [&](MsgType t, Result<RtsAnswer> r) -> Result<std::pair<std::uint8_t, std::string>> {
      if (!r.ok()) return r.status();
      return reply(t, protocol::encode(protocol::RtsReply{std::move(r->customer), r->hq_hlc.value,
                                                          std::move(r->card_number)}));
    };
    switch (static_cast<MsgType>(req.frame.type)) {
      case MsgType::hello: {
        TS_ASSIGN_OR_RETURN(auto m, protocol::decode<protocol::Hello>(body));
        TS_RETURN_IF_ERROR(admit(req, m, /*may_be_anonymous=*/true));
        TS_ASSIGN_OR_RETURN(HelloResult r, hq->hello(m.node, m.acked_op, m.acked_seq));
        return reply(MsgType::hello, protocol::encode(protocol::HelloReply{hq->epoch(), r.push_cursor,
                                                                           r.hq_hlc.value, r.holds_acked}));
      }
      case MsgType::rts_create: {
        TS_ASSIGN_OR_RETURN(auto m, protocol::decode<protocol::RtsCreate>(body));
        TS_RETURN_IF_ERROR(admit(req, m));
        return customer_reply(MsgType::rts_create, hq->rts_create(m.node, m.request, m.customer));
      }
      case MsgType::rts_edit: {
        TS_ASSIGN_OR_RETURN(auto m, protocol::decode<protocol::RtsEdit>(body));
        TS_RETURN_IF_ERROR(admit(req, m));
        return customer_reply(MsgType::rts_edit,
                              hq->rts_edit(m.node, m.request, m.customer, m.base_version, m.changes));
      }
      case MsgType::rts_add_address: {
        TS_ASSIGN_OR_RETURN(auto m, protocol::decode<protocol::RtsAddAddress>(body));
        TS_RETURN_IF_ERROR(admit(req, m));
        return customer_reply(MsgType::rts_add_address,
                              hq->rts_add_address(m.node, m.request, m.customer, m.address));
      }
      case MsgType::rts_issue_loyalty_card: {
        TS_ASSIGN_OR_RETURN(auto m, protocol::decode<protocol::RtsIssueLoyaltyCard>(body));
        TS_RETURN_IF_ERROR(admit(req, m));
        return customer_reply(MsgType::rts_issue_loyalty_card,
                              hq->rts_issue_loyalty_card(m.node, m.request, m.customer));
      }
      case MsgType::search: {
        TS_ASSIGN_OR_RETURN(auto m, protocol::decode<protocol::Search>(body));
        TS_RETURN_IF_ERROR(admit(req, m));
        TS_ASSIGN_OR_RETURN(auto found, hq->search(m.node, m.text, m.filtered));
        return reply(MsgType::search,
                     protocol::encode(protocol::SearchReply{std::move(found.customers), found.truncated}));
      }
      case MsgType::push: {
        TS_ASSIGN_OR_RETURN(auto m, protocol::decode<protocol::Push>(body));
        TS_RETURN_IF_ERROR(admit(req, m));
        TS_ASSIGN_OR_RETURN(PushResult r, hq->push(m.node, m.prev, m.prev_op, m.records));
        note_clock(m.node, r.clock_ahead_ms);
        return reply(MsgType::push, protocol::encode(protocol::PushAck{hq->epoch(), r.acked_seq}));
      }
      case MsgType::pull: {
        TS_ASSIGN_OR_RETURN(auto m, protocol::decode<protocol::Pull>(body));
        TS_RETURN_IF_ERROR(admit(req, m));
        const std::uint32_t limit = std::clamp<std::uint32_t>(m.limit, 1, 5000);
        TS_ASSIGN_OR_RETURN(PullResult r, hq->pull(m.node, m.after, m.after_mark, limit, m.filtered));
        PullReply p = to_pull_reply(hq->epoch(), std::move(r));
        return reply(MsgType::pull, protocol::encode(protocol::PullReply{
                                        std::move(p.epoch), p.reset, p.cursor, p.cursor_mark,
                                        p.hq_hlc.value, std::move(p.customers), std::move(p.aliases), p.more,
                                        std::move(p.merged_elsewhere), p.compacted, std::move(p.erased),
                                        std::move(p.alias_accounts)}));
      }
    }
    return Status::InvalidInput("type", "unknown message type " + std::to_string(req.frame.type));
  }

  Status run_job_if_due() {
    if (SteadyClock::now() < next_job) return Status::Ok();
    next_job = SteadyClock::now() + std::chrono::milliseconds(options.job_interval_ms);
    ++stats.job_runs;
    auto report = hq->run_sync_job();
    if (!report.ok()) {
      // A failed pass (e.g. the database busy beyond its timeout) is retried at the next
      // interval; HQ keeps serving meanwhile.
      ++stats.job_failures;
      std::cerr << "tillsync: customer sync job failed, retrying in " << options.job_interval_ms
                << " ms: " << report.status().to_string() << std::endl;
      return Status::Ok();
    }
    // Work left over (a large backlog): run again without waiting.
    if (report->remaining > 0) next_job = SteadyClock::now();
    return Status::Ok();
  }

  Status serve_once(int timeout_ms) {
    auto received = server->receive(timeout_ms);
    if (!received.ok()) return received.status();
    if (*received) {
      const transport::Request& req = **received;
      ++stats.requests;
      auto result = handle(req);
      const bool drop = options.drop_reply && options.drop_reply(req.frame.type);
      if (!result.ok()) {
        ++stats.rejected;
        // An internal failure of one request (a busy database, say) is answered and
        // logged; it does not stop HQ serving every other terminal.
        // (A node over its request rate is counted in rate_limited, not logged.)
        if (result.status().code() == Code::internal ||
            (result.status().code() == Code::busy && !result.status().retry_after_ms()))
          std::cerr << "tillsync: request type " << int{req.frame.type}
                    << " failed: " << result.status().to_string() << std::endl;
        if (!drop) TS_RETURN_IF_ERROR(server->reply_error(req, result.status()));
      } else if (!drop) {
        TS_RETURN_IF_ERROR(server->reply(req, result->first, result->second));
      }
    }
    stats.malformed = server->stats().malformed;
    stats.handshakes_refused = server->stats().handshakes_refused;
    stats.revoked = server->stats().revoked;
    stats.connections_refused = server->stats().connections_refused;
    stats.connections = server->stats().connections;
    return run_job_if_due();
  }
};

HqService::HqService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HqService::~HqService() = default;

Result<std::unique_ptr<HqService>> HqService::start(std::unique_ptr<Headquarters> hq,
                                                    const HqServiceOptions& options) {
  if (options.job_interval_ms <= 0)
    return Status::InvalidInput("job_interval_ms", "job_interval_ms: must be positive");
  if (!(options.node_requests_per_second >= 0) || options.node_burst < 1)
    return Status::InvalidInput("node_rate", "the per-node request rate must be >= 0 and its burst >= 1");
  if (options.max_connections < 0 || options.handshake_timeout_ms < 0 || options.queue_limit < 1)
    return Status::InvalidInput("limits", "max_connections and handshake_timeout_ms must be >= 0, queue_limit >= 1");
  auto impl = std::make_unique<Impl>();
  impl->hq = std::move(hq);
  impl->options = options;
  transport::ServerOptions server_options;
  server_options.max_connections = options.max_connections;
  server_options.handshake_timeout_ms = options.handshake_timeout_ms;
  server_options.queue_limit = options.queue_limit;
  {
    Impl* self = impl.get();
    server_options.on_refused = [self](const std::string& address, const std::string& reason) {
      self->log_refusal(address, reason);
    };
  }
  if (options.curve) {
    if (!options.allowlist_file.empty()) {
      TS_ASSIGN_OR_RETURN(impl->options.allowlist, load_allowlist(options.allowlist_file));
    }
    impl->set_allowlist(impl->options.allowlist);
    server_options.curve = options.curve;
    Impl* self = impl.get();
    server_options.authorize = [self](const std::string& key, std::string* node) {
      return self->authorize(key, node);
    };
  }
  TS_ASSIGN_OR_RETURN(auto server, transport::Server::bind(impl->context, options.listen, server_options));
  impl->server.emplace(std::move(server));
  impl->next_job = SteadyClock::now() + std::chrono::milliseconds(options.job_interval_ms);
  return std::unique_ptr<HqService>(new HqService(std::move(impl)));
}

const std::string& HqService::endpoint() const { return impl_->server->endpoint(); }

Status HqService::reload_allowlist() {
  if (impl_->options.allowlist_file.empty())
    return Status::InvalidInput("allowlist", "no allowlist file to reload");
  TS_ASSIGN_OR_RETURN(Allowlist list, load_allowlist(impl_->options.allowlist_file));
  impl_->options.allowlist = list;
  impl_->set_allowlist(list);
  return Status::Ok();
}

void HqService::set_allowlist(Allowlist allowlist) {
  impl_->set_allowlist(allowlist);
  impl_->options.allowlist = std::move(allowlist);
}

void HqService::request_reload() { impl_->reload_requested.store(true); }

bool HqService::curve_enabled() const { return impl_->options.curve.has_value(); }

Status HqService::run() {
  while (!impl_->stopping.load()) {
    if (impl_->reload_requested.exchange(false)) {
      if (Status s = reload_allowlist(); s)
        std::cerr << "tillsync: allowlist reloaded: " << impl_->options.allowlist.size()
                  << " terminal(s) admitted" << std::endl;
      else
        std::cerr << "tillsync: allowlist NOT reloaded, the previous one stays in force: "
                  << s.message() << std::endl;
    }
    TS_RETURN_IF_ERROR(impl_->serve_once(std::min(50, impl_->options.job_interval_ms)));
  }
  return Status::Ok();
}

void HqService::stop() { impl_->stopping.store(true); }

Status HqService::serve_once(int timeout_ms) { return impl_->serve_once(timeout_ms); }

std::pair<std::uint8_t, std::string> HqService::dispatch(std::uint8_t type, std::string_view body,
                                                        const std::string& authenticated_node) {
  transport::Request req;
  req.frame.type = type;
  req.frame.body = std::string(body);
  req.authenticated_node = authenticated_node;
  auto result = impl_->handle(req);
  if (!result.ok()) return {transport::kErrorReply, transport::encode_error(result.status())};
  return std::move(result).value();
}

Headquarters& HqService::hq() { return *impl_->hq; }

HqServiceStats HqService::stats() const {
  HqServiceStats s = impl_->stats;
  s.busy_retries = impl_->hq->busy_retries();
  return s;
}

}  // namespace tillsync
