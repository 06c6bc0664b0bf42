// HQ and terminals in one process, talking over loopback ZeroMQ exactly as separate
// machines would: what `tillsync demo` and `tillsync bench` run.
//
// BackgroundHq serves a Headquarters from its own thread; EmbeddedTerminal is a terminal
// as POS software embeds it (node, connection to HQ, replicator).
// Thread-safety: a BackgroundHq is started and stopped from one thread; an
// EmbeddedTerminal belongs to one thread at a time.
#pragma once

#include <pthread.h>

#include <memory>
#include <string>
#include <thread>

#include "tillsync/channel_node.h"
#include "tillsync/headquarters.h"
#include "tillsync/hq_client.h"
#include "tillsync/hq_service.h"
#include "tillsync/replicator.h"
#include "tillsync/status.h"

namespace tillsync::cli {

// HQ on loopback, served by a background thread until stop() or destruction.
class BackgroundHq {
 public:
  BackgroundHq() = default;
  ~BackgroundHq() { (void)stop(); }
  BackgroundHq(const BackgroundHq&) = delete;
  BackgroundHq& operator=(const BackgroundHq&) = delete;

  // Takes ownership of `hq` and serves it on options.listen (default any free port).
  Status start(std::unique_ptr<Headquarters> hq, const HqServiceOptions& options);
  const std::string& endpoint() const;
  // CPU seconds the serving thread has used so far (0 when not running).
  double cpu_seconds() const;
  // Stops serving and joins the thread; returns how the service ended. The
  // Headquarters stays available through hq() until the object is destroyed.
  Status stop();
  Headquarters& hq();

 private:
  std::unique_ptr<HqService> service_;
  std::thread thread_;
  pthread_t handle_{};
  bool running_ = false;
  Status run_status_;
};

// A terminal as a POS application embeds it. The client is declared first so it
// outlives the node and the replicator that borrow it.
struct EmbeddedTerminal {
  std::string db;
  std::unique_ptr<HqClient> client;
  std::unique_ptr<ChannelNode> node;
  std::unique_ptr<Replicator> replicator;

  std::string id() const { return node->node_id(); }
};

struct TerminalSpec {
  std::string db;
  std::string store;
  std::string terminal = "T01";
  bool async_mode = false;
  int rts_timeout_ms = 2000;
  Durability durability = Durability::full;
  ReplicatorOptions replicator{};
};

// Creates the terminal database and connects it to `endpoint`.
Result<EmbeddedTerminal> make_terminal(const TerminalSpec& spec, const std::string& endpoint);

// CPU seconds used by the calling thread.
double thread_cpu_seconds();

}  // namespace tillsync::cli
