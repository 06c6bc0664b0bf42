#include "tillsync/transport/socket.h"

#include <chrono>
#include <vector>
#include <zmq.hpp>

namespace tillsync::transport {

struct Context::Impl {
  zmq::context_t ctx{1};
};

Context::Context() : impl_(std::make_unique<Impl>()) {}
Context::~Context() = default;
Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&&) noexcept = default;

// ---- error replies -------------------------------------------------------------------

std::string encode_error(const Status& status) {
  // "<code>\n<message>": both are text, the code never contains a newline.
  std::string out(status.code_name());
  out += '\n';
  out += status.message();
  return out;
}

Status decode_error(std::string_view body) {
  auto nl = body.find('\n');
  if (nl == std::string_view::npos) return Status::Internal("malformed error reply from HQ");
  auto code = parse_code(body.substr(0, nl));
  if (!code || *code == Code::ok) return Status::Internal("HQ replied with an unknown error code");
  return {*code, std::string(body.substr(nl + 1))};
}

namespace {

void configure(zmq::socket_t& s) {
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(kMaxMessageSize));
}

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

}  // namespace

// ---- Client --------------------------------------------------------------------------

struct Client::Impl {
  zmq::context_t* ctx;
  std::string endpoint;
  ClientOptions options;
  std::optional<zmq::socket_t> socket;
  std::uint64_t next_request_id = 1;

  Status open() {
    try {
      socket.emplace(*ctx, zmq::socket_type::dealer);
      configure(*socket);
      // Queue only on completed connections, so a send to a dead HQ times out instead
      // of sitting in a buffer and being delivered much later.
      socket->set(zmq::sockopt::immediate, 1);
      // Retry a lost connection quickly: a till should notice HQ is back within a
      // fraction of its request timeout.
      socket->set(zmq::sockopt::reconnect_ivl, 20);
      socket->set(zmq::sockopt::reconnect_ivl_max, 1000);
      socket->connect(endpoint);
    } catch (const zmq::error_t& e) {
      socket.reset();
      return Status::InvalidInput("hq", "cannot connect to '" + endpoint + "': " + e.what());
    }
    return Status::Ok();
  }

  Status reopen(const std::string& why) {
    socket.reset();
    Status s = open();
    return s.ok() ? Status::HqUnreachable(why) : s;
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

Result<Client> Client::connect(Context& context, const std::string& endpoint,
                               const ClientOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->ctx = &context.impl().ctx;
  impl->endpoint = endpoint;
  impl->options = options;
  TS_RETURN_IF_ERROR(impl->open());
  return Client(std::move(impl));
}

const std::string& Client::endpoint() const { return impl_->endpoint; }

Result<Frame> Client::call(std::uint8_t type, std::string_view body, std::optional<int> timeout_ms) {
  Impl& c = *impl_;
  if (!c.socket) TS_RETURN_IF_ERROR(c.open());
  const int timeout = timeout_ms.value_or(c.options.timeout_ms);
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout);
  const std::uint64_t id = c.next_request_id++;
  const std::string unreachable = "HQ at " + c.endpoint + " did not answer within " +
                                  std::to_string(timeout) + " ms";
  try {
    c.socket->set(zmq::sockopt::sndtimeo, timeout);
    std::string request = encode_frame(type, id, body);
    if (!c.socket->send(zmq::buffer(request), zmq::send_flags::none)) return c.reopen(unreachable);
    for (;;) {
      zmq::pollitem_t item{c.socket->handle(), 0, ZMQ_POLLIN, 0};
      const int wait = remaining_ms(deadline);
      if (zmq::poll(&item, 1, std::chrono::milliseconds(wait)) == 0) return c.reopen(unreachable);
      zmq::message_t msg;
      if (!c.socket->recv(msg, zmq::recv_flags::dontwait)) continue;
      if (msg.more()) {
        // Not our protocol: drain the rest of the message and keep waiting.
        while (msg.more() && c.socket->recv(msg, zmq::recv_flags::dontwait)) {
        }
        continue;
      }
      auto frame = decode_frame(msg.to_string_view());
      if (!frame.ok()) {
        if (frame.status().code() == Code::unsupported_version) return frame.status();
        continue;  // garbage: ignore
      }
      if (frame->request_id != id) continue;  // a stale reply
      if (frame->type == kErrorReply) return decode_error(frame->body);
      return std::move(frame).value();
    }
  } catch (const zmq::error_t& e) {
    return c.reopen("HQ at " + c.endpoint + ": " + e.what());
  }
}

// ---- Server --------------------------------------------------------------------------

struct Server::Impl {
  zmq::socket_t socket;
  std::string endpoint;
  ServerStats stats;
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::Server(Server&&) noexcept = default;
Server& Server::operator=(Server&&) noexcept = default;
Server::~Server() = default;

Result<Server> Server::bind(Context& context, const std::string& endpoint) {
  try {
    auto impl = std::make_unique<Impl>(Impl{zmq::socket_t(context.impl().ctx, zmq::socket_type::router), {}, {}});
    configure(impl->socket);
    impl->socket.bind(endpoint);
    impl->endpoint = impl->socket.get(zmq::sockopt::last_endpoint);
    return Server(std::move(impl));
  } catch (const zmq::error_t& e) {
    return Status::InvalidInput("listen", "cannot listen on '" + endpoint + "': " + e.what());
  }
}

const std::string& Server::endpoint() const { return impl_->endpoint; }
const ServerStats& Server::stats() const { return impl_->stats; }

Result<std::optional<Request>> Server::receive(int timeout_ms) {
  Impl& s = *impl_;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  try {
    for (;;) {
      zmq::pollitem_t item{s.socket.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, std::chrono::milliseconds(remaining_ms(deadline))) == 0)
        return std::optional<Request>{};
      std::vector<zmq::message_t> parts;
      for (;;) {
        zmq::message_t part;
        if (!s.socket.recv(part, zmq::recv_flags::dontwait)) break;
        const bool more = part.more();
        if (parts.size() < 3) parts.push_back(std::move(part));
        if (!more) break;
      }
      // A well-formed request is exactly [routing id][frame].
      if (parts.size() != 2) {
        ++s.stats.malformed;
        continue;
      }
      Request req;
      req.peer = parts[0].to_string();
      Frame header;
      auto frame = decode_frame(parts[1].to_string_view(), &header);
      if (!frame.ok()) {
        if (frame.status().code() == Code::unsupported_version) {
          ++s.stats.unsupported_version;
          req.frame = header;
          TS_RETURN_IF_ERROR(reply_error(req, frame.status()));
        } else {
          ++s.stats.malformed;
        }
        continue;
      }
      req.frame = std::move(frame).value();
      ++s.stats.requests;
      return std::optional<Request>{std::move(req)};
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return std::optional<Request>{};  // a signal: let the caller look
    return Status::Internal(std::string("receive: ") + e.what());
  }
}

Status Server::reply(const Request& to, std::uint8_t type, std::string_view body) {
  try {
    std::string frame = encode_frame(type, to.frame.request_id, body);
    // ROUTER drops messages to peers that have gone; the client's timeout covers that.
    impl_->socket.send(zmq::buffer(to.peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    impl_->socket.send(zmq::buffer(frame), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    return Status::Internal(std::string("reply: ") + e.what());
  }
  return Status::Ok();
}

Status Server::reply_error(const Request& to, const Status& error) {
  return reply(to, kErrorReply, encode_error(error));
}

}  // namespace tillsync::transport
