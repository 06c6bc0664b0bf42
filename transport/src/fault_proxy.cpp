#include "tillsync/transport/fault_proxy.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <optional>
#include <queue>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "tillsync/transport/frame.h"

namespace tillsync::transport {

namespace {

Status check_direction(const DirectionPolicy& p, const std::string& name) {
  auto probability = [](double v) { return std::isfinite(v) && v >= 0.0 && v <= 1.0; };
  if (!probability(p.drop)) return Status::InvalidInput(name + ".drop", "drop must be a probability in [0, 1]");
  if (!probability(p.duplicate))
    return Status::InvalidInput(name + ".duplicate", "duplicate must be a probability in [0, 1]");
  if (p.delay_min_ms < 0 || p.delay_max_ms < p.delay_min_ms)
    return Status::InvalidInput(name + ".delay", "delay must be a range 0 <= min <= max (ms)");
  return Status::Ok();
}

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Poll period when nothing is held back: how promptly stop() is noticed.
constexpr int kIdlePollMs = 20;

}  // namespace

Status validate(const FaultPolicy& policy) {
  TS_RETURN_IF_ERROR(check_direction(policy.to_hq, "to_hq"));
  return check_direction(policy.to_terminal, "to_terminal");
}

FaultDecision FaultDecider::decide(const DirectionPolicy& policy) {
  // Always four draws, so one message's decision never shifts the next one's.
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const double u_drop = unit(rng_);
  const double u_dup = unit(rng_);
  const std::uint64_t d0 = rng_();
  const std::uint64_t d1 = rng_();
  FaultDecision d;
  if (policy.partitioned || u_drop < policy.drop) {
    d.drop = true;
    d.copies = 0;
    return d;
  }
  d.copies = u_dup < policy.duplicate ? 2 : 1;
  if (policy.delay_max_ms > 0) {
    const auto span = static_cast<std::uint64_t>(policy.delay_max_ms - policy.delay_min_ms) + 1;
    d.delay_ms[0] = policy.delay_min_ms + static_cast<int>(d0 % span);
    d.delay_ms[1] = policy.delay_min_ms + static_cast<int>(d1 % span);
  }
  return d;
}

struct FaultProxy::Impl {
  FaultProxyOptions options;
  zmq::context_t ctx{1};
  std::optional<zmq::socket_t> frontend;
  std::string endpoint;

  mutable std::mutex mu;  // guards policy and stats
  FaultPolicy policy;
  FaultProxyStats stats;

  std::atomic<bool> stopping{false};
  std::thread thread;
  Status thread_status;
  bool joined = false;

  // ---- owned by the proxy thread ----
  struct Backend {
    zmq::socket_t socket;
    std::uint64_t last_used = 0;
  };
  std::map<std::string, Backend> backends;  // client identity -> its DEALER to HQ
  std::uint64_t use_counter = 0;

  struct Held {
    std::int64_t release_ms;
    std::uint64_t order;  // FIFO among equal release times (deterministic)
    Direction direction;
    std::string client;
    std::string payload;
    bool operator>(const Held& o) const {
      return release_ms != o.release_ms ? release_ms > o.release_ms : order > o.order;
    }
  };
  std::priority_queue<Held, std::vector<Held>, std::greater<>> held;
  std::uint64_t held_order = 0;
  FaultDecider decider{0};

  std::int64_t now() const { return options.now_ms ? options.now_ms() : steady_ms(); }

  DirectionStats& stats_of(Direction d) { return d == Direction::to_hq ? stats.to_hq : stats.to_terminal; }

  Backend* backend_for(const std::string& client) {
    auto it = backends.find(client);
    if (it == backends.end()) {
      if (backends.size() >= options.max_clients) {
        auto lru = std::min_element(backends.begin(), backends.end(), [](const auto& a, const auto& b) {
          return a.second.last_used < b.second.last_used;
        });
        backends.erase(lru);
      }
      zmq::socket_t s(ctx, zmq::socket_type::dealer);
      s.set(zmq::sockopt::linger, 0);
      s.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(kMaxMessageSize));
      s.set(zmq::sockopt::reconnect_ivl, 20);
      s.set(zmq::sockopt::reconnect_ivl_max, 500);
      s.connect(options.forward);
      it = backends.emplace(client, Backend{std::move(s), 0}).first;
      std::lock_guard lock(mu);
      ++stats.clients;
    }
    it->second.last_used = ++use_counter;
    return &it->second;
  }

  // Sends one copy now. A full or unconnected queue loses the message, like a network.
  // Counted before sending, so a reader that has seen the message also sees the count.
  void send_now(Direction d, const std::string& client, const std::string& payload) {
    {
      std::lock_guard lock(mu);
      ++stats_of(d).forwarded;
    }
    bool sent = false;
    if (d == Direction::to_hq) {
      Backend* b = backend_for(client);
      sent = b->socket.send(zmq::buffer(payload), zmq::send_flags::dontwait).has_value();
    } else {
      // The client may be gone (its socket reopened): ROUTER drops those silently.
      if (frontend->send(zmq::buffer(client), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
        sent = frontend->send(zmq::buffer(payload), zmq::send_flags::dontwait).has_value();
      }
    }
    if (!sent) {
      std::lock_guard lock(mu);
      --stats_of(d).forwarded;
      ++stats_of(d).dropped;
    }
  }

  void on_message(Direction d, const std::string& client, std::string payload) {
    DirectionPolicy p;
    {
      std::lock_guard lock(mu);
      p = policy.of(d);
      ++stats_of(d).received;
    }
    const FaultDecision decision = decider.decide(p);
    if (decision.drop) {
      std::lock_guard lock(mu);
      ++stats_of(d).dropped;
      return;
    }
    if (decision.copies == 2) {
      std::lock_guard lock(mu);
      ++stats_of(d).duplicated;
    }
    const std::int64_t t = now();
    for (int i = 0; i < decision.copies; ++i) {
      if (decision.delay_ms[i] > 0) {
        held.push(Held{t + decision.delay_ms[i], held_order++, d, client, payload});
        std::lock_guard lock(mu);
        ++stats_of(d).delayed;
      } else {
        send_now(d, client, payload);
      }
    }
  }

  void release_due() {
    const std::int64_t t = now();
    while (!held.empty() && held.top().release_ms <= t) {
      Held h = held.top();
      held.pop();
      bool partitioned = false;
      {
        std::lock_guard lock(mu);
        partitioned = policy.of(h.direction).partitioned;
        if (partitioned) ++stats_of(h.direction).dropped;
      }
      if (!partitioned) send_now(h.direction, h.client, h.payload);
    }
  }

  int poll_timeout() const {
    if (held.empty()) return kIdlePollMs;
    const std::int64_t wait = held.top().release_ms - now();
    return static_cast<int>(std::clamp<std::int64_t>(wait, 0, kIdlePollMs));
  }

  // Receives one multipart message; false when none was ready.
  static bool receive_parts(zmq::socket_t& s, std::vector<zmq::message_t>& parts) {
    parts.clear();
    for (;;) {
      zmq::message_t part;
      if (!s.recv(part, zmq::recv_flags::dontwait)) return !parts.empty();
      const bool more = part.more();
      if (parts.size() < 4) parts.push_back(std::move(part));
      if (!more) return true;
    }
  }

  void loop() {
    std::vector<zmq::message_t> parts;
    std::vector<zmq::pollitem_t> items;
    std::vector<std::string> item_clients;
    while (!stopping.load()) {
      items.clear();
      item_clients.clear();
      items.push_back({frontend->handle(), 0, ZMQ_POLLIN, 0});
      for (auto& [client, b] : backends) {
        items.push_back({b.socket.handle(), 0, ZMQ_POLLIN, 0});
        item_clients.push_back(client);
      }
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(poll_timeout()));
      release_due();
      if (items[0].revents & ZMQ_POLLIN) {
        // Terminal -> HQ: [client identity][frame]; anything else is not ours.
        while (receive_parts(*frontend, parts)) {
          if (parts.size() != 2) continue;
          on_message(Direction::to_hq, parts[0].to_string(), parts[1].to_string());
        }
      }
      for (std::size_t i = 1; i < items.size(); ++i) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        const std::string& client = item_clients[i - 1];
        auto it = backends.find(client);
        if (it == backends.end()) continue;  // evicted while handling the frontend
        // HQ -> terminal: [frame] on this client's DEALER.
        while (receive_parts(it->second.socket, parts)) {
          if (parts.size() != 1) continue;
          on_message(Direction::to_terminal, client, parts[0].to_string());
          it = backends.find(client);
          if (it == backends.end()) break;
        }
      }
    }
  }

  void run() {
    try {
      loop();
    } catch (const zmq::error_t& e) {
      thread_status = Status::Internal(std::string("fault proxy: ") + e.what());
    }
    // The thread owns the sockets: close them here.
    held = {};
    backends.clear();
    frontend.reset();
  }
};

FaultProxy::FaultProxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FaultProxy::~FaultProxy() { (void)stop(); }

Result<std::unique_ptr<FaultProxy>> FaultProxy::start(const FaultProxyOptions& options) {
  TS_RETURN_IF_ERROR(validate(options.policy));
  if (options.forward.empty()) return Status::InvalidInput("forward", "the HQ endpoint to forward to is missing");
  if (options.max_clients == 0) return Status::InvalidInput("max_clients", "must be at least 1");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->policy = options.policy;
  impl->decider = FaultDecider(options.seed);
  try {
    // Check the forward endpoint now, so a typo fails here and not in the thread.
    zmq::socket_t probe(impl->ctx, zmq::socket_type::dealer);
    probe.set(zmq::sockopt::linger, 0);
    probe.connect(options.forward);
  } catch (const zmq::error_t& e) {
    return Status::InvalidInput("forward", "cannot connect to '" + options.forward + "': " + e.what());
  }
  try {
    impl->frontend.emplace(impl->ctx, zmq::socket_type::router);
    impl->frontend->set(zmq::sockopt::linger, 0);
    impl->frontend->set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(kMaxMessageSize));
    impl->frontend->bind(options.listen);
    impl->endpoint = impl->frontend->get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Status::InvalidInput("listen", "cannot listen on '" + options.listen + "': " + e.what());
  }
  Impl* raw = impl.get();
  // Starting the thread orders the socket setup above before its first use there.
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<FaultProxy>(new FaultProxy(std::move(impl)));
}

const std::string& FaultProxy::endpoint() const { return impl_->endpoint; }
const std::string& FaultProxy::forward() const { return impl_->options.forward; }

Status FaultProxy::set_policy(const FaultPolicy& policy) {
  TS_RETURN_IF_ERROR(validate(policy));
  std::lock_guard lock(impl_->mu);
  impl_->policy = policy;
  return Status::Ok();
}

FaultPolicy FaultProxy::policy() const {
  std::lock_guard lock(impl_->mu);
  return impl_->policy;
}

void FaultProxy::partition(bool to_hq, bool to_terminal) {
  std::lock_guard lock(impl_->mu);
  impl_->policy.to_hq.partitioned = to_hq;
  impl_->policy.to_terminal.partitioned = to_terminal;
}

FaultProxyStats FaultProxy::stats() const {
  std::lock_guard lock(impl_->mu);
  return impl_->stats;
}

Status FaultProxy::stop() {
  if (!impl_ || impl_->joined) return impl_ ? impl_->thread_status : Status::Ok();
  impl_->stopping.store(true);
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->joined = true;
  return impl_->thread_status;
}

}  // namespace tillsync::transport
