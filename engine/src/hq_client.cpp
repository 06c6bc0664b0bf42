#include "tillsync/hq_client.h"

#include "protocol.h"
#include "tillsync/transport/socket.h"

namespace tillsync {

using protocol::MsgType;

struct HqClient::Impl {
  transport::Context context;
  std::optional<transport::Client> client;
  std::optional<bool> reachable;  // unknown until the first call

  template <class Reply, class Request>
  Result<Reply> call(MsgType type, Request request) {
    return reply<Reply>(type, client->call(static_cast<std::uint8_t>(type), protocol::encode(std::move(request))));
  }

  // Notes whether a failed request reached HQ (an error reply means it did).
  Status failed(Status s) {
    reachable = s.code() != Code::hq_unreachable;
    return s;
  }

  // The decoded reply to a `type` request, noting whether HQ answered at all.
  template <class Reply>
  Result<Reply> reply(MsgType type, Result<transport::Frame> frame) {
    if (!frame.ok()) return failed(frame.status());
    reachable = true;
    if (frame->type != protocol::reply_type(type))
      return Status::Internal("HQ answered with an unexpected message type");
    auto reply = protocol::decode<Reply>(frame->body);
    if (!reply.ok()) return Status::Internal("HQ sent a malformed reply: " + reply.status().message());
    return reply;
  }

  Result<Customer> customer_call(MsgType type, auto request) {
    TS_ASSIGN_OR_RETURN(auto reply, call<protocol::CustomerReply>(type, std::move(request)));
    return std::move(reply.customer);
  }
};

Status HqLink::start_push(const std::string& node_id, const std::vector<LogRecord>& records) {
  started_.push_back(push(node_id, records));
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
  auto impl = std::make_unique<Impl>();
  transport::ClientOptions options;
  options.timeout_ms = timeout_ms;
  if (curve) {
    options.curve = transport::KeyPair{curve->public_key, curve->secret_key};
    options.server_public_key = curve->hq_public_key;
  }
  TS_ASSIGN_OR_RETURN(auto client, transport::Client::connect(impl->context, endpoint, options));
  impl->client.emplace(std::move(client));
  return std::unique_ptr<HqClient>(new HqClient(std::move(impl)));
}

const std::string& HqClient::endpoint() const { return impl_->client->endpoint(); }

bool HqClient::reachable() {
  if (!impl_->reachable) (void)ping("");
  return impl_->reachable.value_or(false);
}

Result<std::string> HqClient::ping(const std::string& node_id) {
  TS_ASSIGN_OR_RETURN(auto pong, impl_->call<protocol::Pong>(MsgType::ping, protocol::Ping{node_id}));
  return std::move(pong.epoch);
}

Result<Customer> HqClient::create_customer(const std::string& node_id, const Customer& customer) {
  return impl_->customer_call(MsgType::rts_create, protocol::RtsCreate{node_id, customer});
}

Result<Customer> HqClient::edit_customer(const std::string& node_id, const Guid& customer,
                                         std::int64_t base_version,
                                         const std::vector<FieldChange>& changes) {
  return impl_->customer_call(MsgType::rts_edit,
                              protocol::RtsEdit{node_id, customer, base_version, changes});
}

Result<Customer> HqClient::add_address(const std::string& node_id, const Guid& customer,
                                       const Address& address) {
  return impl_->customer_call(MsgType::rts_add_address,
                              protocol::RtsAddAddress{node_id, customer, address});
}

Result<Customer> HqClient::issue_loyalty_card(const std::string& node_id, const Guid& customer) {
  return impl_->customer_call(MsgType::rts_issue_loyalty_card,
                              protocol::RtsIssueLoyaltyCard{node_id, customer});
}

Result<std::vector<Customer>> HqClient::search(const std::string& node_id, const std::string& text) {
  TS_ASSIGN_OR_RETURN(auto reply,
                      impl_->call<protocol::CustomersReply>(MsgType::search, protocol::Search{node_id, text}));
  return std::move(reply.customers);
}

Result<PushReply> HqClient::push(const std::string& node_id, const std::vector<LogRecord>& records) {
  TS_ASSIGN_OR_RETURN(auto ack, impl_->call<protocol::PushAck>(MsgType::push, protocol::Push{node_id, records}));
  return PushReply{std::move(ack.epoch), ack.acked_seq};
}

Status HqClient::start_push(const std::string& node_id, const std::vector<LogRecord>& records) {
  Status sent = impl_->client->send(static_cast<std::uint8_t>(MsgType::push),
                                    protocol::encode(protocol::Push{node_id, records}));
  return sent.ok() ? sent : impl_->failed(std::move(sent));
}

Result<PushReply> HqClient::finish_push() {
  TS_ASSIGN_OR_RETURN(auto ack, impl_->reply<protocol::PushAck>(MsgType::push, impl_->client->receive()));
  return PushReply{std::move(ack.epoch), ack.acked_seq};
}

Result<PullReply> HqClient::pull(const std::string& node_id, std::int64_t after,
                                 std::uint32_t limit, bool filtered) {
  TS_ASSIGN_OR_RETURN(auto r, impl_->call<protocol::PullReply>(
                                  MsgType::pull, protocol::Pull{node_id, after, limit, filtered}));
  return PullReply{std::move(r.epoch), r.cursor, Hlc{r.hq_hlc}, std::move(r.customers),
                   std::move(r.aliases)};
}

}  // namespace tillsync
