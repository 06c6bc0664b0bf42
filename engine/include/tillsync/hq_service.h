// HqService: HQ on the network. Binds a ROUTER socket, answers real-time calls, push
// and pull requests, and runs the customer sync job continuously between requests.
//
// Threads: run() serves in the calling thread and owns the socket; stop() may be called
// from any thread (or a signal handler) and makes run() return within ~50 ms.
// Requests are handled one at a time, each in its own store transaction.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "tillsync/clock.h"
#include "tillsync/headquarters.h"
#include "tillsync/status.h"
#include "tillsync/transport/socket.h"

namespace tillsync {

// The terminals HQ admits with CurveZMQ: node id ("STORE/TERMINAL") -> Z85 public key.
using Allowlist = std::map<std::string, std::string>;
// Reads an allowlist file: one "NODE_ID PUBLIC_KEY" per line; blank lines and lines
// starting with '#' are ignored. invalid_input (naming the line) for a malformed line,
// a node listed twice or a key given to two nodes.
Result<Allowlist> load_allowlist(const std::string& file);

struct HqServiceOptions {
  std::string listen = "tcp://127.0.0.1:*";
  // Set: the socket runs CurveZMQ with this key pair and admits only the terminals of
  // the allowlist; every request must then claim the node it authenticated as, or it is
  // refused with `unauthorized` (logged on stderr, nothing written).
  // Not set: plaintext and unauthenticated (for tests and closed lab networks).
  std::optional<transport::KeyPair> curve{};
  std::string allowlist_file{};  // with curve: read at start and by reload_allowlist()
  Allowlist allowlist{};         // with curve and no allowlist_file: the allowlist
  int job_interval_ms = 200;  // the sync job runs at least this often while serving
  // Per-node request rate (a token bucket per node id; anonymous pings per address): a
  // node may send `node_burst` requests at once and `node_requests_per_second` on
  // average; beyond that HQ answers `busy` with a retry hint (Status::retry_after_ms)
  // and does nothing, so no operation is lost: the till sends it again later.
  // node_requests_per_second 0: no limit.
  double node_requests_per_second = 200;
  int node_burst = 1000;
  PhysicalClock* rate_clock = nullptr;  // for the buckets; nullptr: a steady clock
  // Transport limits (transport::ServerOptions): open connections, handshake deadline,
  // messages queued per connection.
  int max_connections = 2048;
  int handshake_timeout_ms = 5000;
  int queue_limit = 1000;
  // Test hook (fault injection): called after a request was handled and committed;
  // returning true drops the reply, as if the network lost it.
  std::function<bool(std::uint8_t request_type)> drop_reply;
};

struct HqServiceStats {
  std::uint64_t requests = 0;
  std::uint64_t malformed = 0;
  std::uint64_t rejected = 0;  // requests answered with an error
  std::uint64_t unauthorized = 0;  // of those: a node claimed another node's identity
  std::uint64_t handshakes_refused = 0;  // CURVE: connections with a key not on the allowlist
  std::uint64_t revoked = 0;             // CURVE: requests dropped, the key no longer admitted
  std::uint64_t job_runs = 0;
  std::uint64_t job_failures = 0;  // passes that failed and were retried later
  std::uint64_t busy_retries = 0;  // HQ transactions repeated after Code::busy
  std::uint64_t rate_limited = 0;  // requests answered busy: the node's rate was exceeded
  std::uint64_t connections_refused = 0;  // closed at once: max_connections reached
  std::uint64_t connections = 0;          // open now
};

class HqService {
 public:
  // Binds and is ready to serve; `hq` is owned by the service.
  static Result<std::unique_ptr<HqService>> start(std::unique_ptr<Headquarters> hq,
                                                  const HqServiceOptions& options);
  ~HqService();

  // The bound endpoint, with the real port.
  const std::string& endpoint() const;
  // Serves until stop(). Returns the first internal error that stops the service.
  Status run();
  void stop();
  // Serves requests for up to `timeout_ms` or until one was handled; runs the job when
  // due. For tests that drive HQ step by step in one thread.
  Status serve_once(int timeout_ms);

  // Rereads options.allowlist_file (keeps the current allowlist when that fails).
  // Connections of removed keys stop being served at once. Call from the serving thread.
  Status reload_allowlist();
  // Replaces the allowlist (embedders and tests). Call from the serving thread.
  void set_allowlist(Allowlist allowlist);
  // Async-signal-safe (SIGHUP): run() reloads the allowlist file at its next turn.
  void request_reload();
  bool curve_enabled() const;

  // Handles one request body as if it had arrived on the socket from a connection
  // authenticated as `authenticated_node` (empty without CURVE), without running the
  // job: the reply's frame type and body, or an error reply (transport::kErrorReply,
  // transport::encode_error). For fuzzing and for embedders with their own transport.
  // Call from the serving thread.
  std::pair<std::uint8_t, std::string> dispatch(std::uint8_t type, std::string_view body,
                                                const std::string& authenticated_node = {});

  Headquarters& hq();
  HqServiceStats stats() const;

 private:
  struct Impl;
  explicit HqService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tillsync
