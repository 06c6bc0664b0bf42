// FaultProxy: an unreliable network between terminals and HQ, for tests and for
// `tillsync netsim` (DESIGN.md §5, §6).
//
// It binds a ROUTER frontend that terminals (DEALER clients) connect to instead of HQ,
// and forwards every message to HQ's ROUTER through a DEALER of its own per client
// identity, so HQ still sees distinct peers; replies travel back the same way. On the
// way, a seeded policy (changeable at run time) decides per message and per direction
// whether it is dropped, duplicated or held back for a while (delays also reorder), and
// a direction can be partitioned (everything in it is dropped, also messages still held
// back when they come due).
//
// Determinism: decisions come from one std::mt19937_64 seeded by the options; every
// message consumes the same number of draws whatever the policy, so a given seed and
// message sequence always yields the same decisions (see FaultDecider).
// Time: delays are release times taken from the injectable clock (`now_ms`); the proxy
// thread polls with timeouts bounded by the next release.
//
// Threads: start() binds and starts one proxy thread, which owns every socket; stop()
// (or the destructor) ends and joins it. set_policy(), policy() and stats() may be
// called from any thread. The proxy owns its ZeroMQ context.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>

#include "tillsync/status.h"

namespace tillsync::transport {

enum class Direction { to_hq, to_terminal };

// What happens to messages travelling in one direction.
struct DirectionPolicy {
  double drop = 0.0;       // probability a message is lost
  double duplicate = 0.0;  // probability a message is delivered twice
  int delay_min_ms = 0;    // each copy is held back a uniform time in [min, max]
  int delay_max_ms = 0;    // 0: no delay
  bool partitioned = false;  // drop everything in this direction

  bool operator==(const DirectionPolicy&) const = default;
};

struct FaultPolicy {
  DirectionPolicy to_hq;
  DirectionPolicy to_terminal;

  // Same faults both ways.
  static FaultPolicy symmetric(const DirectionPolicy& p) { return {p, p}; }
  DirectionPolicy& of(Direction d) { return d == Direction::to_hq ? to_hq : to_terminal; }
  const DirectionPolicy& of(Direction d) const { return d == Direction::to_hq ? to_hq : to_terminal; }
  bool operator==(const FaultPolicy&) const = default;
};

// invalid_input (naming the field) for probabilities outside [0, 1] or a bad delay range.
Status validate(const FaultPolicy& policy);

// The decision for one message.
struct FaultDecision {
  bool drop = false;
  int copies = 1;                 // 2 when duplicated (0 when dropped)
  int delay_ms[2] = {0, 0};       // per copy
};

// The seeded decision procedure, on its own so its determinism can be tested without
// sockets. Each decide() consumes exactly four draws.
class FaultDecider {
 public:
  explicit FaultDecider(std::uint64_t seed) : rng_(seed) {}
  FaultDecision decide(const DirectionPolicy& policy);

 private:
  std::mt19937_64 rng_;
};

struct DirectionStats {
  std::uint64_t received = 0;    // messages that entered the proxy
  std::uint64_t forwarded = 0;   // copies sent on (including duplicates and delayed ones)
  std::uint64_t dropped = 0;     // lost by chance or to a partition
  std::uint64_t duplicated = 0;  // messages sent twice
  std::uint64_t delayed = 0;     // copies held back before sending
};

struct FaultProxyStats {
  DirectionStats to_hq;
  DirectionStats to_terminal;
  std::uint64_t clients = 0;  // client identities seen
};

struct FaultProxyOptions {
  std::string listen = "tcp://127.0.0.1:*";
  std::string forward;  // HQ's endpoint
  std::uint64_t seed = 1;
  FaultPolicy policy;
  // Milliseconds on any monotonic scale; nullptr: std::chrono::steady_clock.
  std::function<std::int64_t()> now_ms;
  // Per-client backend connections kept; the least recently used is closed beyond it
  // (clients reopen their socket after every timeout, each time with a new identity).
  std::size_t max_clients = 64;
};

class FaultProxy {
 public:
  // Binds the frontend, connects nothing yet (backend connections are made per client),
  // and starts the proxy thread. invalid_input for bad endpoints or policy.
  static Result<std::unique_ptr<FaultProxy>> start(const FaultProxyOptions& options);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  // The frontend with its real port, e.g. "tcp://127.0.0.1:40123": give it to terminals.
  const std::string& endpoint() const;
  const std::string& forward() const;

  // Takes effect for the next message (and for held-back messages' partition check).
  Status set_policy(const FaultPolicy& policy);
  FaultPolicy policy() const;
  // Convenience: partition one direction, both, or heal (keeps the other settings).
  void partition(bool to_hq, bool to_terminal);
  void heal() { partition(false, false); }

  FaultProxyStats stats() const;

  // Stops and joins the proxy thread; messages still held back are discarded.
  // Idempotent. The internal error that stopped the thread early, if any, is returned.
  Status stop();

 private:
  struct Impl;
  explicit FaultProxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tillsync::transport
