#include "netsim_command.h"

#include <charconv>
#include <iostream>
#include <memory>

#include "tillsync/transport/fault_proxy.h"

namespace tillsync::cli {

namespace {

struct NetsimOptions {
  std::string listen, forward;
  double drop = 0.0;
  double duplicate = 0.0;
  std::string delay;  // "A-B" or "A"
  std::uint64_t seed = 1;
};

// "A-B" (or "A", meaning A-A) in milliseconds.
Status parse_delay(const std::string& text, int& lo, int& hi) {
  auto number = [](std::string_view s, int& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && !s.empty() && out >= 0;
  };
  const auto dash = text.find('-');
  const std::string_view all(text);
  bool ok = dash == std::string::npos
                ? number(all, lo) && (hi = lo, true)
                : number(all.substr(0, dash), lo) && number(all.substr(dash + 1), hi);
  if (!ok || hi < lo || hi > 600'000) {
    return Status::InvalidInput("delay-ms", "--delay-ms must be MIN-MAX in milliseconds "
                                            "(0 <= MIN <= MAX <= 600000), got '" +
                                                one_line(text) + "'");
  }
  return Status::Ok();
}

Status check_endpoint(std::string_view field, const std::string& endpoint) {
  if ((endpoint.rfind("tcp://", 0) == 0 || endpoint.rfind("ipc://", 0) == 0) && endpoint.size() > 6)
    return Status::Ok();
  return Status::InvalidInput(std::string(field), "--" + std::string(field) +
                                                      " must be a ZeroMQ endpoint such as "
                                                      "tcp://127.0.0.1:5555, got '" +
                                                      one_line(endpoint) + "'");
}

Json direction_json(const transport::DirectionStats& s) {
  Json j;
  j["received"] = s.received;
  j["forwarded"] = s.forwarded;
  j["dropped"] = s.dropped;
  j["duplicated"] = s.duplicated;
  j["delayed"] = s.delayed;
  return j;
}

std::string direction_text(const transport::DirectionStats& s) {
  return std::to_string(s.received) + " received, " + std::to_string(s.forwarded) + " forwarded, " +
         std::to_string(s.dropped) + " dropped, " + std::to_string(s.duplicated) + " duplicated, " +
         std::to_string(s.delayed) + " delayed";
}

int run_netsim(const Cli& cli, const NetsimOptions& o) {
  if (Status s = check_endpoint("listen", o.listen); !s) return cli.fail(s);
  if (Status s = check_endpoint("forward", o.forward); !s) return cli.fail(s);
  transport::DirectionPolicy p;
  p.drop = o.drop;
  p.duplicate = o.duplicate;
  if (!o.delay.empty()) {
    if (Status s = parse_delay(o.delay, p.delay_min_ms, p.delay_max_ms); !s) return cli.usage(s.message());
  }
  transport::FaultProxyOptions options;
  options.listen = o.listen;
  options.forward = o.forward;
  options.seed = o.seed;
  options.policy = transport::FaultPolicy::symmetric(p);

  install_stop_handlers();
  std::unique_ptr<transport::FaultProxy> proxy;
  {
    // The proxy's threads must not take SIGINT/SIGTERM from the main thread.
    BlockStopSignals block;
    auto started = transport::FaultProxy::start(options);
    if (!started) return cli.fail(started.status());
    proxy = std::move(started).value();
  }
  if (cli.json) {
    Json j;
    j["event"] = "listening";
    j["endpoint"] = proxy->endpoint();
    j["forward"] = o.forward;
    j["drop"] = o.drop;
    j["duplicate"] = o.duplicate;
    j["delay_ms"] = {p.delay_min_ms, p.delay_max_ms};
    j["seed"] = o.seed;
    print_json_line(j);
  } else {
    std::cout << "listening on " << proxy->endpoint() << std::endl;
    std::cerr << "tillsync: netsim forwards to " << o.forward << " (drop " << o.drop
              << ", duplicate " << o.duplicate << ", delay " << p.delay_min_ms << "-"
              << p.delay_max_ms << " ms, seed " << o.seed
              << "); stop with Ctrl-C or SIGTERM" << std::endl;
  }
  while (!wait_for_stop(500)) {
  }
  Status stopped = proxy->stop();
  const transport::FaultProxyStats stats = proxy->stats();
  proxy.reset();
  if (!stopped) return cli.fail(stopped);
  if (cli.json) {
    Json j;
    j["event"] = "stopped";
    j["to_hq"] = direction_json(stats.to_hq);
    j["to_terminal"] = direction_json(stats.to_terminal);
    j["clients"] = stats.clients;
    print_json_line(j);
  } else {
    std::cout << "stopped: to HQ " << direction_text(stats.to_hq) << "; to terminals "
              << direction_text(stats.to_terminal) << std::endl;
  }
  return kExitOk;
}

}  // namespace

void add_netsim_command(CLI::App& root, Cli& cli) {
  auto o = std::make_shared<NetsimOptions>();
  CLI::App* sub = root.add_subcommand(
      "netsim",
      "Simulate an unreliable network between terminals and HQ: listen where terminals\n"
      "connect (their --hq), forward to HQ, and drop, duplicate or delay (thus reorder)\n"
      "messages both ways, decided by a seeded random generator. Prints 'listening on\n"
      "ENDPOINT' once ready and runs until interrupted (Ctrl-C / SIGTERM).");
  sub->add_option("--listen", o->listen,
                  "Endpoint terminals connect to, e.g. tcp://127.0.0.1:6000; a port of * picks a "
                  "free one (the real port is printed)")
      ->required()
      ->type_name("ENDPOINT");
  sub->add_option("--forward", o->forward, "HQ's endpoint (as given to hq serve --listen)")
      ->required()
      ->type_name("ENDPOINT");
  sub->add_option("--drop", o->drop, "Probability that a message is lost")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0))
      ->type_name("R");
  sub->add_option("--duplicate", o->duplicate, "Probability that a message is delivered twice")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0))
      ->type_name("R");
  sub->add_option("--delay-ms", o->delay,
                  "Hold each message back a random time in this range (e.g. 0-200); delayed "
                  "messages overtake each other")
      ->type_name("MIN-MAX");
  sub->add_option("--seed", o->seed, "Seed of the fault decisions (same seed and traffic, same faults)")
      ->capture_default_str()
      ->type_name("S");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_netsim(cli, *o); });
}

}  // namespace tillsync::cli
