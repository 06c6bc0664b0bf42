// Request/reply over ZeroMQ: HQ binds a ROUTER (Server), terminals connect a DEALER
// (Client). Every message is one frame (frame.h) whose request id pairs a reply with
// its request. A send is not a delivery: callers rely on replies (acks), never on sends.
//
// Ownership and threads: a Context owns the ZeroMQ context and must outlive every
// socket made from it; a Context may be shared by threads. Each Client and Server owns
// one socket and belongs to one thread at a time (move-only).
// Errors: Client::call reports every communication failure or timeout as
// Code::hq_unreachable, saying why when the transport can tell (Client::last_failure);
// an error reply from the server comes back with the server's code. Linger is 0:
// closing never blocks on unsent messages.
#pragma once

#include <cstdint>
#include <functional>
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

// ---- CurveZMQ keys ----------------------------------------------------------------------
// A CurveZMQ key pair, both keys as 40-character Z85 text.
struct KeyPair {
  std::string public_key;
  std::string secret_key;
  bool operator==(const KeyPair&) const = default;
};

// True when the linked libzmq supports CURVE.
bool curve_available();
// True for a 40-character Z85 string (a CurveZMQ key).
bool is_z85_key(std::string_view text);
// A fresh key pair (zmq_curve_keypair). internal when libzmq has no CURVE support.
Result<KeyPair> generate_key_pair();
// DIR/public.key and DIR/secret.key, one Z85 key each (a trailing newline is written).
// save creates DIR with mode 0700 if needed (an existing DIR others can enter is
// refused), creates each file with O_EXCL|O_NOFOLLOW, the secret key with mode 0600, and
// never overwrites a key pair (invalid_input). load: invalid_input for missing or
// malformed files and for a secret key file others can read or write, or a link;
// loading a key pair disables core dumps of the process (RLIMIT_CORE 0, not dumpable).
Status save_key_pair(const KeyPair& keys, const std::string& dir);
Result<KeyPair> load_key_pair(const std::string& dir);
// A file holding one Z85 public key (e.g. HQ's public.key).
Result<std::string> load_public_key(const std::string& file);

struct ClientOptions {
  int timeout_ms = 2000;  // default bound on one call: send, wait, receive
  // Set: the connection is encrypted and authenticated with CurveZMQ; the client proves
  // `curve` and accepts only a server holding the secret of `server_public_key`.
  std::optional<KeyPair> curve{};
  std::string server_public_key{};  // Z85; required with `curve`
};

// Why a Client found HQ unreachable, as far as the transport can tell: from ZeroMQ's
// socket events for the connection attempts of the failed request (and a DNS lookup
// when they point to one). docs/operations.md says what to do about each.
enum class UnreachableReason {
  timeout,              // nothing failed that the socket could see: no answer in time
  unresolvable_host,    // the endpoint's host name does not resolve
  connection_refused,   // the TCP connection was refused (nothing listens) or failed at once
  handshake_refused,    // CURVE: HQ refused this terminal's key (not on HQ's allowlist)
  server_key_mismatch,  // CURVE: HQ dropped the handshake (wrong HQ public key?)
  security_mismatch,    // one side uses CURVE and the other does not
  handshake_failed,     // plaintext: the peer dropped the ZeroMQ handshake (not HQ? HQ full?)
};
// A stable word: "timeout", "unresolvable_host", "connection_refused", ... (JSON, logs).
std::string_view to_text(UnreachableReason reason);

struct Unreachable {
  UnreachableReason reason = UnreachableReason::timeout;
  std::string detail;  // short, e.g. "connection refused by 127.0.0.1:5555"
};

class Client {
 public:
  // Connecting is asynchronous in ZeroMQ: an unreachable endpoint shows at the first
  // call, not here. invalid_input for a malformed endpoint.
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
  // call() in two halves, so the caller can work, or send more, while the server
  // answers. Each send() starts its request's timeout; receive() returns the reply to
  // the oldest request sent and not yet received, waiting until that request's
  // deadline. A timeout or communication failure abandons every request in flight
  // (the socket is reopened), and so does call(); their late replies are ignored.
  // receive() with nothing in flight is invalid_input. Errors as for call().
  Status send(std::uint8_t type, std::string_view body, std::optional<int> timeout_ms = std::nullopt);
  Result<Frame> receive();
  // Forgets every request in flight: their late replies are ignored.
  void abandon();
  const std::string& endpoint() const;
  // Why the latest send(), receive() or call() that returned hq_unreachable failed (its
  // message is "HQ at ENDPOINT is unreachable: " + detail); nullopt before any. A later
  // answer does not clear it.
  const std::optional<Unreachable>& last_failure() const;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct Request {
  std::string peer;  // ZeroMQ routing id of the sender
  Frame frame;
  // The sender's IP address as ZeroMQ saw it (empty for inproc/ipc): for logs.
  std::string peer_address{};
  // With CURVE: the node id the authorize callback gave the sender's key (checked again
  // for every message, so a revoked key stops working at once). Empty without CURVE.
  std::string authenticated_node{};
};

struct ServerOptions {
  // Set: the socket is a CurveZMQ server and every connection must pass `authorize`
  // (required then) in the ZAP handshake. The Server runs the ZAP handler itself on
  // "inproc://zeromq.zap.01" of its Context, inside receive(): at most one CURVE
  // Server per Context, and handshakes progress only while receive() is waiting.
  std::optional<KeyPair> curve{};
  // Given a client's Z85 public key: true to admit it, setting *node_id_out to the node
  // id it authenticates. Called from receive(), in the server's thread.
  std::function<bool(const std::string& client_public_key_z85, std::string* node_id_out)> authorize{};

  // ---- limits (a few thousand tills, some stolen or broken) ----
  // Open connections at most; a connection beyond is closed as soon as it is accepted
  // (counted in connections_refused, reported to on_refused). 0: no cap.
  int max_connections = 2048;
  // A connection must finish the ZeroMQ (and CURVE) handshake within this, or it is
  // closed: silent connections do not hold a place for long.
  int handshake_timeout_ms = 5000;
  // Messages queued per connection in each direction (ZeroMQ high-water marks). A peer
  // that sends faster than HQ serves is held back by TCP, not buffered without bound.
  int queue_limit = 1000;
  // Told of each refused connection or handshake, in the server's thread, with the peer
  // address (never client bytes) and a reason. May be empty.
  std::function<void(const std::string& peer_address, const std::string& reason)> on_refused{};
};

struct ServerStats {
  std::uint64_t requests = 0;             // well-formed requests handed to the caller
  std::uint64_t malformed = 0;            // dropped: not a tillsync frame
  std::uint64_t unsupported_version = 0;  // answered with unsupported_version
  std::uint64_t handshakes_refused = 0;   // CURVE: keys the authorize callback refused
  std::uint64_t revoked = 0;              // CURVE: messages dropped, key no longer admitted
  std::uint64_t connections_refused = 0;  // closed at once: max_connections reached
  std::uint64_t connections = 0;          // open now (as far as receive() has seen)
};

class Server {
 public:
  // Binds `endpoint`; "tcp://127.0.0.1:*" picks a free port (see endpoint()).
  // invalid_input for a bad endpoint or CURVE options (bad key, no authorize callback,
  // or another CURVE Server already in this Context).
  static Result<Server> bind(Context& context, const std::string& endpoint,
                             const ServerOptions& options = {});
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
