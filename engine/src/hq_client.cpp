#include "tillsync/hq_client.h"

#include "protocol.h"
#include "tillsync/transport/socket.h"

namespace tillsync {

using protocol::MsgType;

struct HqClient::Impl {
  transport::Context context;
  std::optional<transport::Client> client;
  HqClientOptions options;
  PhysicalClock* clock = nullptr;
  int failures = 0;          // requests failed in a row (not sent, or not answered)
  std::int64_t retry_at = 0;  // reachable() is false until then

  template <class Reply, class Request>
  Result<Reply> call(MsgType type, Request request) {
    return reply<Reply>(type, client->call(static_cast<std::uint8_t>(type), protocol::encode(std::move(request))));
  }

  // A real-time request: not sent is hq_unreachable, sent and not answered in time is
  // outcome_unknown (HQ may have carried it out).
  Result<RtsAnswer> rts_call(MsgType type, const std::string& body) {
    client->abandon();
    Status sent = client->send(static_cast<std::uint8_t>(type), body);
    if (!sent.ok()) return failed(std::move(sent));
    auto frame = client->receive();
    if (!frame.ok() && frame.status().code() == Code::hq_unreachable)
      return failed(Status(Code::outcome_unknown, frame.status().message() +
                                                      " after the request was sent: HQ may have carried it out"));
    TS_ASSIGN_OR_RETURN(auto r, reply<protocol::RtsReply>(type, std::move(frame)));
    return RtsAnswer{std::move(r.customer), Hlc{r.hq_hlc}, std::move(r.card_number)};
  }

  // Notes a failed request: an answer from HQ (an error reply) resets the retry delay,
  // no answer lengthens it.
  Status failed(Status s) {
    if (s.code() != Code::hq_unreachable && s.code() != Code::outcome_unknown) {
      failures = 0;
      return s;
    }
    ++failures;
    std::int64_t delay = options.retry_after_ms;
    for (int i = 1; i < failures && delay < options.max_retry_after_ms; ++i) delay *= 2;
    retry_at = clock->now_ms() + std::min<std::int64_t>(delay, options.max_retry_after_ms);
    return s;
  }

  // The decoded reply to a `type` request, noting whether HQ answered at all.
  template <class Reply>
  Result<Reply> reply(MsgType type, Result<transport::Frame> frame) {
    if (!frame.ok()) return failed(frame.status());
    failures = 0;
    if (frame->type != protocol::reply_type(type))
      return Status::Internal("HQ answered with an unexpected message type");
    auto reply = protocol::decode<Reply>(frame->body);
    if (!reply.ok()) return Status::Internal("HQ sent a malformed reply: " + reply.status().message());
    return reply;
  }
};

Status HqLink::start_push(const std::string& node_id, std::int64_t prev, const Guid& prev_op,
                          const std::vector<LogRecord>& records) {
  started_.push_back(push(node_id, prev, prev_op, records));
  return Status::Ok();
}

Result<PushReply> HqLink::finish_push() {
  if (started_.empty()) return Status::InvalidInput("push", "no push is waiting for its reply");
  Result<PushReply> reply = std::move(started_.front());
  started_.pop_front();
  return reply;
}

Result<std::optional<HqCurveKeys>> load_curve_keys(const NodeConfig& config) {
  if (!config.key_dir && !config.hq_public_key) return std::optional<HqCurveKeys>{};
  if (!config.key_dir || !config.hq_public_key)
    return Status::InvalidInput("keys", "CurveZMQ needs both the terminal's key directory and HQ's public key");
  if (!transport::is_z85_key(*config.hq_public_key))
    return Status::InvalidInput("hq_public_key", "HQ's public key is not a CurveZMQ key (40 Z85 characters)");
  TS_ASSIGN_OR_RETURN(transport::KeyPair keys, transport::load_key_pair(*config.key_dir));
  return std::optional<HqCurveKeys>{HqCurveKeys{keys.public_key, keys.secret_key, *config.hq_public_key}};
}

HqClient::HqClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HqClient::~HqClient() = default;

Result<std::unique_ptr<HqClient>> HqClient::connect(const std::string& endpoint, int timeout_ms,
                                                    const std::optional<HqCurveKeys>& curve) {
  HqClientOptions o;
  o.timeout_ms = timeout_ms;
  o.curve = curve;
  return connect(endpoint, o);
}

Result<std::unique_ptr<HqClient>> HqClient::connect(const std::string& endpoint, const HqClientOptions& o) {
  auto impl = std::make_unique<Impl>();
  impl->options = o;
  impl->clock = o.clock != nullptr ? o.clock : &SystemClock::instance();
  transport::ClientOptions options;
  options.timeout_ms = o.timeout_ms;
  if (o.curve) {
    options.curve = transport::KeyPair{o.curve->public_key, o.curve->secret_key};
    options.server_public_key = o.curve->hq_public_key;
  }
  TS_ASSIGN_OR_RETURN(auto client, transport::Client::connect(impl->context, endpoint, options));
  impl->client.emplace(std::move(client));
  return std::unique_ptr<HqClient>(new HqClient(std::move(impl)));
}

const std::string& HqClient::endpoint() const { return impl_->client->endpoint(); }

std::optional<UnreachableCause> HqClient::last_unreachable() const {
  const auto& failure = impl_->client->last_failure();
  if (!failure) return std::nullopt;
  return UnreachableCause{std::string(transport::to_text(failure->reason)), failure->detail};
}

bool HqClient::reachable() {
  return impl_->failures == 0 || impl_->clock->now_ms() >= impl_->retry_at;
}

Result<HelloReply> HqClient::hello(const std::string& node_id, const Guid& acked_op, std::int64_t acked_seq) {
  TS_ASSIGN_OR_RETURN(auto r, impl_->call<protocol::HelloReply>(MsgType::hello,
                                                                protocol::Hello{node_id, acked_op, acked_seq}));
  return HelloReply{std::move(r.epoch), r.push_cursor, Hlc{r.hq_hlc}, r.holds_acked};
}

Result<RtsAnswer> HqClient::create_customer(const std::string& node_id, const Guid& request,
                                           const Customer& customer) {
  return impl_->rts_call(MsgType::rts_create, protocol::encode(protocol::RtsCreate{node_id, request, customer}));
}

Result<RtsAnswer> HqClient::edit_customer(const std::string& node_id, const Guid& request, const Guid& customer,
                                          std::int64_t base_version,
                                          const std::vector<FieldChange>& changes) {
  return impl_->rts_call(MsgType::rts_edit,
                         protocol::encode(protocol::RtsEdit{node_id, request, customer, base_version, changes}));
}

Result<RtsAnswer> HqClient::add_address(const std::string& node_id, const Guid& request, const Guid& customer,
                                        const Address& address) {
  return impl_->rts_call(MsgType::rts_add_address,
                         protocol::encode(protocol::RtsAddAddress{node_id, request, customer, address}));
}

Result<RtsAnswer> HqClient::issue_loyalty_card(const std::string& node_id, const Guid& request,
                                               const Guid& customer) {
  return impl_->rts_call(MsgType::rts_issue_loyalty_card,
                         protocol::encode(protocol::RtsIssueLoyaltyCard{node_id, request, customer}));
}

Result<HqClient::SearchResult> HqClient::search(const std::string& node_id, const std::string& text,
                                                bool filtered) {
  TS_ASSIGN_OR_RETURN(auto reply, impl_->call<protocol::SearchReply>(MsgType::search,
                                                                     protocol::Search{node_id, text, filtered}));
  return SearchResult{std::move(reply.customers), reply.truncated};
}

Result<PushReply> HqClient::push(const std::string& node_id, std::int64_t prev, const Guid& prev_op,
                                 const std::vector<LogRecord>& records) {
  TS_ASSIGN_OR_RETURN(auto ack, impl_->call<protocol::PushAck>(MsgType::push, protocol::Push{node_id, prev, prev_op, records}));
  return PushReply{std::move(ack.epoch), ack.acked_seq};
}

Status HqClient::start_push(const std::string& node_id, std::int64_t prev, const Guid& prev_op,
                            const std::vector<LogRecord>& records) {
  Status sent = impl_->client->send(static_cast<std::uint8_t>(MsgType::push),
                                    protocol::encode(protocol::Push{node_id, prev, prev_op, records}));
  return sent.ok() ? sent : impl_->failed(std::move(sent));
}

Result<PushReply> HqClient::finish_push() {
  TS_ASSIGN_OR_RETURN(auto ack, impl_->reply<protocol::PushAck>(MsgType::push, impl_->client->receive()));
  return PushReply{std::move(ack.epoch), ack.acked_seq};
}

Result<PullReply> HqClient::pull(const std::string& node_id, std::int64_t after,
                                 std::uint64_t after_mark, std::uint32_t limit, bool filtered) {
  TS_ASSIGN_OR_RETURN(auto r, impl_->call<protocol::PullReply>(
                                  MsgType::pull, protocol::Pull{node_id, after, after_mark, limit, filtered}));
  return PullReply{std::move(r.epoch), r.reset,          r.cursor,         r.cursor_mark,
                   Hlc{r.hq_hlc},       std::move(r.customers), std::move(r.aliases), r.more,
                   std::move(r.merged_elsewhere), r.compacted, std::move(r.erased),
                   std::move(r.alias_accounts)};
}

}  // namespace tillsync
