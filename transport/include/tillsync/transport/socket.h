// Request/reply over ZeroMQ: HQ binds a ROUTER (Server), terminals connect a DEALER
// (Client). Every message is one frame (frame.h) whose request id pairs a reply with
// its request. A send is not a delivery: callers rely on replies (acks), never on sends.
//
// Ownership and threads: a Context owns the ZeroMQ context and must outlive every
// socket made from it; a Context may be shared by threads. Each Client and Server owns
// one socket and belongs to one thread at a time (move-only).
// Errors: Client::call reports every communication failure or timeout as
// Code::hq_unreachable; an error reply from the server comes back with the server's
// code. Linger is 0: closing never blocks on unsent messages.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "tillsync/status.h"
#include "tillsync/transport/frame.h"

namespace tillsync::transport {

// Reply type carrying an error: body = encode_error(status).
inline constexpr std::uint8_t kErrorReply = 0xFF;
std::string encode_error(const Status& status);
Status decode_error(std::string_view body);

class Context {
 public:
  Context();
  ~Context();
  Context(Context&&) noexcept;
  Context& operator=(Context&&) noexcept;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

struct ClientOptions {
  int timeout_ms = 2000;  // default bound on one call: send, wait, receive
};

class Client {
 public:
  // Connecting is asynchronous in ZeroMQ: an unreachable endpoint shows as a call
  // timeout, not here. invalid_input for a malformed endpoint.
  static Result<Client> connect(Context& context, const std::string& endpoint,
                                const ClientOptions& options = {});
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  // Sends one request and waits for its reply (at most `timeout_ms`, or the default).
  // On timeout the socket is closed and reopened, so a late reply to this request can
  // never be mistaken for the reply to a later one.
  Result<Frame> call(std::uint8_t type, std::string_view body,
                     std::optional<int> timeout_ms = std::nullopt);
  const std::string& endpoint() const;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct Request {
  std::string peer;  // ZeroMQ routing id of the sender
  Frame frame;
};

struct ServerStats {
  std::uint64_t requests = 0;             // well-formed requests handed to the caller
  std::uint64_t malformed = 0;            // dropped: not a tillsync frame
  std::uint64_t unsupported_version = 0;  // answered with unsupported_version
};

class Server {
 public:
  // Binds `endpoint`; "tcp://127.0.0.1:*" picks a free port (see endpoint()).
  static Result<Server> bind(Context& context, const std::string& endpoint);
  Server(Server&&) noexcept;
  Server& operator=(Server&&) noexcept;
  ~Server();

  // The bound endpoint with the actual port, e.g. "tcp://127.0.0.1:40123".
  const std::string& endpoint() const;

  // Waits up to `timeout_ms` (0: don't wait) for the next well-formed request.
  // Malformed frames are dropped and counted; a frame of another protocol version is
  // answered with unsupported_version here. nullopt when nothing arrived in time.
  Result<std::optional<Request>> receive(int timeout_ms);
  Status reply(const Request& to, std::uint8_t type, std::string_view body);
  Status reply_error(const Request& to, const Status& error);
  const ServerStats& stats() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tillsync::transport
