#include "local_cluster.h"

#include <time.h>

namespace tillsync::cli {
namespace {

double cpu_seconds_of(clockid_t clock) {
  timespec ts{};
  if (::clock_gettime(clock, &ts) != 0) return 0;
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

Status BackgroundHq::start(std::unique_ptr<Headquarters> hq, const HqServiceOptions& options) {
  if (running_) return Status::Internal("BackgroundHq::start: already serving");
  TS_ASSIGN_OR_RETURN(service_, HqService::start(std::move(hq), options));
  thread_ = std::thread([this] { run_status_ = service_->run(); });
  handle_ = thread_.native_handle();
  ::pthread_setname_np(handle_, "tillsync-hq");  // for profilers; best effort
  running_ = true;
  return Status::Ok();
}

const std::string& BackgroundHq::endpoint() const { return service_->endpoint(); }

double BackgroundHq::cpu_seconds() const {
  if (!running_) return 0;
  clockid_t clock{};
  if (::pthread_getcpuclockid(handle_, &clock) != 0) return 0;
  return cpu_seconds_of(clock);
}

Status BackgroundHq::stop() {
  if (!running_) return Status::Ok();
  service_->stop();
  thread_.join();
  running_ = false;
  return run_status_;
}

Headquarters& BackgroundHq::hq() { return service_->hq(); }

Result<EmbeddedTerminal> make_terminal(const TerminalSpec& spec, const std::string& endpoint) {
  NodeConfig config;
  config.store_id = spec.store;
  config.terminal_id = spec.terminal;
  config.hq_endpoint = endpoint;
  config.rts_timeout_ms = spec.rts_timeout_ms;
  config.profile.async_customer_creation = spec.async_mode;
  ChannelNodeOptions options;
  options.durability = spec.durability;
  EmbeddedTerminal t;
  t.db = spec.db;
  TS_ASSIGN_OR_RETURN(t.client, HqClient::connect(endpoint, spec.rts_timeout_ms));
  TS_ASSIGN_OR_RETURN(t.node, ChannelNode::create(spec.db, config, options));
  t.node->attach_hq(t.client.get());
  TS_ASSIGN_OR_RETURN(t.replicator, Replicator::open(spec.db, *t.client, spec.replicator));
  return t;
}

double thread_cpu_seconds() { return cpu_seconds_of(CLOCK_THREAD_CPUTIME_ID); }

}  // namespace tillsync::cli
