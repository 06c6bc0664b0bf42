#include "tillsync/transport/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <system_error>
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

// ---- CurveZMQ keys -------------------------------------------------------------------

bool curve_available() { return zmq_has("curve") != 0; }

bool is_z85_key(std::string_view text) {
  if (text.size() != 40) return false;
  static constexpr std::string_view kZ85 =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  return text.find_first_not_of(kZ85) == std::string_view::npos;
}

Result<KeyPair> generate_key_pair() {
  std::array<char, 41> pub{};
  std::array<char, 41> sec{};
  if (zmq_curve_keypair(pub.data(), sec.data()) != 0)
    return Status::Internal(std::string("cannot generate a CurveZMQ key pair: ") + zmq_strerror(errno));
  return KeyPair{std::string(pub.data(), 40), std::string(sec.data(), 40)};
}

namespace {

namespace fs = std::filesystem;

// `secret`: a secret key file must be a regular file (not a link) that only its owner
// can read or write.
Result<std::string> read_key_file(const fs::path& file, bool secret = false) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | (secret ? O_NOFOLLOW : 0));
  if (fd < 0) return Status::InvalidInput("keys", "cannot read key file " + file.string() + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::InvalidInput("keys", file.string() + " is not a regular file");
  }
  if (secret && (st.st_mode & 077) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::InvalidInput("keys", file.string() + " can be read or written by others than its owner (mode " +
                                            mode + "); refusing a secret key others may have seen (chmod 600 it, "
                                            "or make a new key pair if it may have leaked)");
  }
  std::string text;
  char buf[256];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n > 0) text.assign(buf, static_cast<std::size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
    text.pop_back();
  if (!is_z85_key(text))
    return Status::InvalidInput("keys", file.string() + " does not hold a CurveZMQ key (40 Z85 characters)");
  return text;
}

Status write_key_file(const fs::path& file, const std::string& key, mode_t mode) {
  // Never overwrites a key nor follows a link planted in its place; the mode is set on
  // the open file (whatever the umask) before the key is written.
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return Status::InvalidInput("keys", "cannot create " + file.string() + ": " + std::strerror(errno));
  const std::string line = key + "\n";
  const bool ok = ::fchmod(fd, mode) == 0 &&
                  ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  if (::close(fd) != 0 || !ok) return Status::Internal("cannot write " + file.string());
  return Status::Ok();
}

// A process holding a secret key writes no core dump (the key would be in it).
void disable_core_dumps() {
  struct rlimit none {};
  (void)::setrlimit(RLIMIT_CORE, &none);
  (void)::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

}  // namespace

Status save_key_pair(const KeyPair& keys, const std::string& dir) {
  if (!is_z85_key(keys.public_key) || !is_z85_key(keys.secret_key))
    return Status::InvalidInput("keys", "not a CurveZMQ key pair");
  std::error_code ec;
  const fs::path where(dir);
  if (!fs::exists(where, ec)) {
    if (where.has_parent_path()) fs::create_directories(where.parent_path(), ec);
    if (ec || ::mkdir(where.c_str(), 0700) != 0 || ::chmod(where.c_str(), 0700) != 0)
      return Status::InvalidInput("keys", "cannot create directory " + dir + ": " +
                                              (ec ? ec.message() : std::string(std::strerror(errno))));
  }
  struct stat st {};
  if (::stat(where.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status::InvalidInput("keys", dir + " is not a directory");
  if ((st.st_mode & 077) != 0)
    return Status::InvalidInput("keys", dir + " can be entered by others than its owner; a key pair goes in a "
                                              "directory only its owner can use (chmod 700 it, or name a new one)");
  const fs::path pub = fs::path(dir) / "public.key";
  const fs::path sec = fs::path(dir) / "secret.key";
  if (fs::exists(pub, ec) || fs::exists(sec, ec))
    return Status::InvalidInput("keys", dir + " already holds a key pair; refusing to overwrite it");
  TS_RETURN_IF_ERROR(write_key_file(sec, keys.secret_key, 0600));
  return write_key_file(pub, keys.public_key, 0644);
}

Result<KeyPair> load_key_pair(const std::string& dir) {
  KeyPair keys;
  TS_ASSIGN_OR_RETURN(keys.public_key, read_key_file(fs::path(dir) / "public.key"));
  TS_ASSIGN_OR_RETURN(keys.secret_key, read_key_file(fs::path(dir) / "secret.key", /*secret=*/true));
  // The public key must belong to the secret key.
  std::array<char, 41> derived{};
  if (zmq_curve_public(derived.data(), keys.secret_key.c_str()) != 0 ||
      keys.public_key != std::string(derived.data(), 40))
    return Status::InvalidInput("keys", dir + ": public.key does not match secret.key");
  disable_core_dumps();
  return keys;
}

Result<std::string> load_public_key(const std::string& file) { return read_key_file(file); }

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

std::string_view to_text(UnreachableReason reason) {
  switch (reason) {
    case UnreachableReason::timeout: return "timeout";
    case UnreachableReason::unresolvable_host: return "unresolvable_host";
    case UnreachableReason::connection_refused: return "connection_refused";
    case UnreachableReason::handshake_refused: return "handshake_refused";
    case UnreachableReason::server_key_mismatch: return "server_key_mismatch";
    case UnreachableReason::security_mismatch: return "security_mismatch";
    case UnreachableReason::handshake_failed: return "handshake_failed";
  }
  return "timeout";
}

namespace {

// The socket events a Client watches: those of its connection attempts.
constexpr int kClientEvents = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_DELAYED | ZMQ_EVENT_CONNECT_RETRIED |
                              ZMQ_EVENT_CLOSED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                              ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                              ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;

std::atomic<std::uint64_t> client_monitor_count{0};  // names the monitors' inproc endpoints

// "HOST:PORT" of an endpoint ("tcp://[::1]:5555" -> "[::1]:5555", a "SOURCE;" prefix
// dropped; other transports: the whole endpoint), and HOST alone ("::1"; empty when
// not tcp).
struct HqAddress {
  std::string host_port;
  std::string host;
};
HqAddress hq_address(std::string_view endpoint) {
  constexpr std::string_view kTcp = "tcp://";
  if (endpoint.substr(0, kTcp.size()) != kTcp) return {std::string(endpoint), {}};
  std::string_view rest = endpoint.substr(kTcp.size());
  if (const auto semi = rest.rfind(';'); semi != std::string_view::npos) rest = rest.substr(semi + 1);
  std::string_view host = rest.substr(0, rest.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return {std::string(rest), std::string(host)};
}

// Empty when `host` resolves; else getaddrinfo's reason. Blocks for the lookup.
std::string resolve_error(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (found != nullptr) ::freeaddrinfo(found);
  return rc == 0 ? std::string() : std::string(::gai_strerror(rc));
}

}  // namespace

struct Client::Impl {
  zmq::context_t* ctx;
  std::string endpoint;
  ClientOptions options;
  std::optional<zmq::socket_t> socket;
  std::uint64_t next_request_id = 1;
  std::optional<Unreachable> last_failure;

  // ---- why a request failed ----
  // A socket opened for a request is watched (a ZeroMQ socket monitor on an inproc
  // PAIR) until HQ answers on it, so a failure can say what the connection attempts
  // ran into. libzmq 4.3 reports (see docs/operations.md):
  //   refused:             CONNECT_DELAYED, CLOSED, CONNECT_RETRIED (again and again)
  //   host unresolvable:   CONNECT_RETRIED alone (no socket was ever opened)
  //   CURVE key refused:   CONNECTED, HANDSHAKE_FAILED_AUTH (ZAP status 400), DISCONNECTED;
  //                        libzmq does not retry
  //   wrong HQ public key: CONNECTED, HANDSHAKE_FAILED_NO_DETAIL (EPIPE or ECONNRESET),
  //                        DISCONNECTED, CONNECT_RETRIED (again and again); the same as a
  //                        peer that closes every connection at once (HQ at its cap)
  //   CURVE on one side:   CONNECTED, HANDSHAKE_FAILED_PROTOCOL (mechanism mismatch)
  //   no answer:           CONNECTED, HANDSHAKE_SUCCEEDED, then nothing
  // Watching stops once HQ answers (or the request is abandoned): between requests
  // nobody reads the events, which would pile up while a till idles with HQ down.
  // send() replaces an unwatched socket whose connection is down by a watched one.
  std::optional<zmq::socket_t> monitor;
  enum class Attempt { idle, connecting, connected, ready, failed };
  struct Watch {
    Attempt attempt = Attempt::idle;  // the latest connection attempt
    bool opened = false;  // an attempt since the last CONNECT_RETRIED opened a socket
    // The latest attempt that failed, and how; a completed handshake clears it.
    // unresolvable_host here is a suspicion, checked with a DNS lookup at the failure.
    std::optional<UnreachableReason> verdict;
    std::string detail;
  };
  Watch watch;

  Status open(bool watched) {
    try {
      socket.emplace(*ctx, zmq::socket_type::dealer);
      configure(*socket);
      if (options.curve) {
        socket->set(zmq::sockopt::curve_serverkey, options.server_public_key);
        socket->set(zmq::sockopt::curve_publickey, options.curve->public_key);
        socket->set(zmq::sockopt::curve_secretkey, options.curve->secret_key);
      }
      // Queue only on completed connections, so a send to a dead HQ times out instead
      // of sitting in a buffer and being delivered much later.
      socket->set(zmq::sockopt::immediate, 1);
      // Retry a lost connection quickly: a till should notice HQ is back within a
      // fraction of its request timeout.
      socket->set(zmq::sockopt::reconnect_ivl, 20);
      socket->set(zmq::sockopt::reconnect_ivl_max, 1000);
      watch = {};
      if (watched) {
        // Before connect(), so the first attempt is seen; the PAIR is connected before
        // any event can be sent (a monitor without its peer would block the I/O thread).
        const std::string name = "inproc://tillsync.client-monitor." + std::to_string(++client_monitor_count);
        if (zmq_socket_monitor(socket->handle(), name.c_str(), kClientEvents) != 0) throw zmq::error_t();
        monitor.emplace(*ctx, zmq::socket_type::pair);
        monitor->set(zmq::sockopt::linger, 0);
        monitor->set(zmq::sockopt::rcvhwm, 0);  // never full: a full one would stall the I/O thread
        monitor->connect(name);
      }
      socket->connect(endpoint);
    } catch (const zmq::error_t& e) {
      close();
      return Status::InvalidInput("hq", "cannot connect to '" + endpoint + "': " + e.what());
    }
    return Status::Ok();
  }

  // Stops watching: the monitor is stopped before its PAIR goes (an event sent to a
  // PAIR without its peer would block ZeroMQ's I/O thread).
  void unwatch() {
    if (socket && monitor) (void)zmq_socket_monitor(socket->handle(), nullptr, 0);
    monitor.reset();
    watch = {};
  }
  void close() {
    unwatch();
    socket.reset();
  }
  ~Impl() { close(); }

  // With ZMQ_IMMEDIATE, POLLOUT means a connection has completed its handshake.
  bool connected() {
    try {
      return socket && (socket->get(zmq::sockopt::events) & ZMQ_POLLOUT) != 0;
    } catch (const zmq::error_t&) {
      return false;
    }
  }

  // Reads the events the monitor has queued.
  void drain() {
    if (!monitor) return;
    try {
      zmq::message_t head, where;
      while (monitor->recv(head, zmq::recv_flags::dontwait)) {
        // [event (u16), value (u32)][endpoint]; both parts arrive together.
        if (!head.more() || !monitor->recv(where, zmq::recv_flags::dontwait) || head.size() < 6) continue;
        std::uint16_t event = 0;
        std::uint32_t value = 0;
        std::memcpy(&event, head.data(), sizeof event);
        std::memcpy(&value, static_cast<const char*>(head.data()) + sizeof event, sizeof value);
        note(event, value);
      }
    } catch (const zmq::error_t&) {
      // The context is going away: nothing more to learn.
    }
  }

  void note(int event, std::uint32_t value) {
    Watch& w = watch;
    const std::string where = hq_address(endpoint).host_port;
    auto failed = [&w](UnreachableReason reason, std::string detail) {
      w.verdict = reason;
      w.detail = std::move(detail);
      w.attempt = Attempt::failed;
    };
    // The connection was dropped before the handshake completed.
    auto dropped = [&] {
      if (options.curve) {
        failed(UnreachableReason::server_key_mismatch,
               "HQ dropped the CURVE handshake (wrong HQ public key? HQ at its connection limit?)");
      } else {
        failed(UnreachableReason::handshake_failed,
               where + " dropped the ZeroMQ handshake (not a tillsync HQ, or HQ at its connection limit?)");
      }
    };
    if (event != ZMQ_EVENT_CONNECT_RETRIED) w.opened = true;
    switch (event) {
      case ZMQ_EVENT_CONNECT_DELAYED: w.attempt = Attempt::connecting; break;
      case ZMQ_EVENT_CONNECTED: w.attempt = Attempt::connected; break;
      case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        w.attempt = Attempt::ready;
        w.verdict.reset();
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:  // value: HQ's ZAP status code
        failed(UnreachableReason::handshake_refused, "HQ refused this terminal's key (not on HQ's allowlist?)");
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
          failed(UnreachableReason::security_mismatch,
                 options.curve ? "HQ does not use CURVE encryption, this terminal does"
                               : "HQ requires CURVE keys, this terminal has none");
        } else if (options.curve && value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC) {
          dropped();
        } else {
          char code[16];
          std::snprintf(code, sizeof code, "0x%08x", static_cast<unsigned>(value));
          failed(UnreachableReason::handshake_failed,
                 "the ZeroMQ handshake with " + where + " failed (protocol error " + code + ")");
        }
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: dropped(); break;
      case ZMQ_EVENT_DISCONNECTED:
        if (w.attempt == Attempt::connected) dropped();
        w.attempt = Attempt::idle;
        break;
      case ZMQ_EVENT_CLOSED:  // the connecting socket gave up without a connection
        if (w.attempt == Attempt::connecting) {
          failed(UnreachableReason::connection_refused, "connection refused by " + where);
        } else if (w.attempt == Attempt::idle) {
          failed(UnreachableReason::connection_refused, "cannot connect to " + where + " (no route to it?)");
        }
        w.attempt = Attempt::idle;
        break;
      case ZMQ_EVENT_CONNECT_RETRIED:
        if (!w.opened) failed(UnreachableReason::unresolvable_host, {});
        w.opened = false;
        w.attempt = Attempt::idle;
        break;
      default: break;
    }
  }

  // Why the current request failed, from what the monitor saw.
  Unreachable explain(int timeout_ms) {
    drain();
    const Watch& w = watch;
    const HqAddress where = hq_address(endpoint);
    const std::string within = " within " + std::to_string(timeout_ms) + " ms";
    if (w.verdict == UnreachableReason::unresolvable_host) {
      // Only now, and only when the events point to it: a lookup may take a while.
      const std::string why = where.host.empty() ? std::string() : resolve_error(where.host);
      if (!why.empty()) return {UnreachableReason::unresolvable_host, "cannot resolve host " + where.host + ": " + why};
      return {UnreachableReason::timeout, "could not open a connection to " + where.host_port + within};
    }
    if (w.verdict) return {*w.verdict, w.detail};
    switch (w.attempt) {
      case Attempt::ready: return {UnreachableReason::timeout, "connected, but no answer" + within};
      case Attempt::connected:
        return {UnreachableReason::timeout, "connected to " + where.host_port + ", but the handshake did not finish" + within};
      case Attempt::connecting:
        return {UnreachableReason::timeout, "no connection to " + where.host_port + within +
                                                " (host down, or a firewall dropping packets?)"};
      default: return {UnreachableReason::timeout, "no answer" + within};
    }
  }

  // A request failed: says why, closes the socket (every request in flight is
  // abandoned) and opens a new, unwatched one, which connects meanwhile (send() keeps
  // it if its connection is up by then). `error`: a ZeroMQ error, if any.
  Status fail(int timeout_ms, const std::string& error = {}) {
    Unreachable why = explain(timeout_ms);
    if (!error.empty() && why.reason == UnreachableReason::timeout) why.detail = error;
    abandon();
    close();
    (void)open(/*watched=*/false);  // the endpoint worked before; else send() retries
    last_failure = why;
    return Status::HqUnreachable("HQ at " + endpoint + " is unreachable: " + why.detail);
  }

  // Requests sent and not yet answered (send() … receive()), oldest first, and
  // replies that came before an older request's.
  struct Outstanding {
    std::uint64_t id = 0;
    Clock::time_point deadline;
    int timeout_ms = 0;
  };
  std::deque<Outstanding> outstanding;
  std::map<std::uint64_t, Frame> early;

  bool is_outstanding(std::uint64_t id) const {
    return std::any_of(outstanding.begin(), outstanding.end(), [id](const Outstanding& o) { return o.id == id; });
  }

  // Forgets every request in flight: their late replies are ignored.
  void abandon() {
    outstanding.clear();
    early.clear();
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

Result<Client> Client::connect(Context& context, const std::string& endpoint,
                               const ClientOptions& options) {
  if (options.curve) {
    if (!curve_available()) return Status::Internal("this libzmq was built without CURVE support");
    if (!is_z85_key(options.curve->public_key) || !is_z85_key(options.curve->secret_key))
      return Status::InvalidInput("keys", "the terminal's CurveZMQ key pair is malformed");
    if (!is_z85_key(options.server_public_key))
      return Status::InvalidInput("hq_public_key", "HQ's public key is missing or malformed");
  }
  auto impl = std::make_unique<Impl>();
  impl->ctx = &context.impl().ctx;
  impl->endpoint = endpoint;
  impl->options = options;
  // Unwatched: connecting starts now, and the first send() keeps this socket if its
  // connection is up by then, else opens a watched one.
  TS_RETURN_IF_ERROR(impl->open(/*watched=*/false));
  return Client(std::move(impl));
}

const std::string& Client::endpoint() const { return impl_->endpoint; }

const std::optional<Unreachable>& Client::last_failure() const { return impl_->last_failure; }

void Client::abandon() {
  impl_->abandon();
  impl_->unwatch();  // a request was sent on this socket: its connection worked
}

Result<Frame> Client::call(std::uint8_t type, std::string_view body, std::optional<int> timeout_ms) {
  abandon();
  TS_RETURN_IF_ERROR(send(type, body, timeout_ms));
  return receive();
}

Status Client::send(std::uint8_t type, std::string_view body, std::optional<int> timeout_ms) {
  Impl& c = *impl_;
  // An unwatched socket whose connection is down (HQ went away since it last answered,
  // or never answered) is replaced by a watched one, so a failure can say why.
  if (c.socket && !c.monitor && c.outstanding.empty() && !c.connected()) c.close();
  if (!c.socket) TS_RETURN_IF_ERROR(c.open(/*watched=*/true));
  const int timeout = timeout_ms.value_or(c.options.timeout_ms);
  const Impl::Outstanding request{c.next_request_id++, Clock::now() + std::chrono::milliseconds(timeout), timeout};
  try {
    c.socket->set(zmq::sockopt::sndtimeo, timeout);
    std::string frame = encode_frame(type, request.id, body);
    if (!c.socket->send(zmq::buffer(frame), zmq::send_flags::none)) return c.fail(timeout);
  } catch (const zmq::error_t& e) {
    return c.fail(timeout, e.what());
  }
  c.outstanding.push_back(request);
  return Status::Ok();
}

Result<Frame> Client::receive() {
  Impl& c = *impl_;
  if (c.outstanding.empty() || !c.socket)
    return Status::InvalidInput("receive", "no request is waiting for a reply");
  const Impl::Outstanding request = c.outstanding.front();
  c.outstanding.pop_front();
  // The server's answer: its reply, or the error it sent. HQ answers on this socket:
  // nothing more to watch for.
  auto answer = [&c](Frame frame) -> Result<Frame> {
    c.unwatch();
    if (frame.type == kErrorReply) return decode_error(frame.body);
    return frame;
  };
  if (auto it = c.early.find(request.id); it != c.early.end()) {
    Frame frame = std::move(it->second);
    c.early.erase(it);
    return answer(std::move(frame));
  }
  try {
    for (;;) {
      zmq::pollitem_t item{c.socket->handle(), 0, ZMQ_POLLIN, 0};
      const int wait = remaining_ms(request.deadline);
      if (zmq::poll(&item, 1, std::chrono::milliseconds(wait)) == 0) return c.fail(request.timeout_ms);
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
      if (frame->request_id != request.id) {
        // A later request's reply is kept for its receive(); anything else is stale.
        if (c.is_outstanding(frame->request_id)) c.early.emplace(frame->request_id, std::move(frame).value());
        continue;
      }
      return answer(std::move(frame).value());
    }
  } catch (const zmq::error_t& e) {
    return c.fail(request.timeout_ms, e.what());
  }
}

// ---- Server --------------------------------------------------------------------------

struct Server::Impl {
  zmq::socket_t socket;
  std::string endpoint;
  ServerStats stats;
  ServerOptions options;
  std::optional<zmq::socket_t> zap;  // the ZAP handler (REP), with CURVE only
  // The socket monitor's receiving end: connection events, for the connection cap.
  std::optional<zmq::socket_t> monitor;
  std::set<int> open_connections;  // file descriptors of accepted connections

  Impl(zmq::context_t& ctx, ServerOptions opts)
      : socket(ctx, zmq::socket_type::router), options(std::move(opts)) {}
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (monitor) {
      zmq_socket_monitor(socket.handle(), nullptr, 0);
      monitor.reset();
    }
  }

  void refused(const std::string& address, const std::string& reason) {
    if (options.on_refused) options.on_refused(address, reason);
  }

  // Starts the socket monitor (before bind, so no accept is missed).
  void start_monitor(zmq::context_t& ctx) {
    const std::string address = "inproc://tillsync.server-monitor." +
                                std::to_string(reinterpret_cast<std::uintptr_t>(this));
    if (zmq_socket_monitor(socket.handle(), address.c_str(),
                           ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CLOSED) != 0)
      throw zmq::error_t();
    monitor.emplace(ctx, zmq::socket_type::pair);
    monitor->set(zmq::sockopt::linger, 0);
    monitor->connect(address);
  }

  // Reads the monitor's events: counts connections and closes those beyond the cap.
  void drain_monitor() {
    for (;;) {
      zmq::message_t event, where;
      if (!monitor->recv(event, zmq::recv_flags::dontwait)) return;
      if (event.more()) (void)monitor->recv(where, zmq::recv_flags::dontwait);
      if (event.size() < 6) continue;
      std::uint16_t id = 0;
      std::uint32_t value = 0;
      std::memcpy(&id, event.data(), 2);
      std::memcpy(&value, static_cast<const char*>(event.data()) + 2, 4);
      const int fd = static_cast<int>(value);
      if (id == ZMQ_EVENT_ACCEPTED) {
        if (options.max_connections > 0 &&
            open_connections.size() >= static_cast<std::size_t>(options.max_connections)) {
          // Not ours to close: shutting it down makes ZeroMQ drop it (and report it).
          const std::string address = peer_of(fd);
          ::shutdown(fd, SHUT_RDWR);
          ++stats.connections_refused;
          refused(address, "too many connections (" + std::to_string(options.max_connections) + ")");
        } else {
          open_connections.insert(fd);
        }
      } else if (id == ZMQ_EVENT_DISCONNECTED || id == ZMQ_EVENT_CLOSED) {
        open_connections.erase(fd);
      }
      stats.connections = open_connections.size();
    }
  }

  static std::string peer_of(int fd) {
    sockaddr_storage addr{};
    socklen_t length = sizeof addr;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) return "unknown";
    char host[INET6_ADDRSTRLEN] = {};
    if (addr.ss_family == AF_INET)
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&addr)->sin_addr, host, sizeof host);
    else if (addr.ss_family == AF_INET6)
      ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr, host, sizeof host);
    else
      return "local";
    return host;
  }

  // Answers one ZAP request: admits the client key when authorize() accepts it. The
  // user id carries "<node id> <client key>" so receive() can re-check the key per message.
  void answer_zap() {
    std::vector<zmq::message_t> parts;
    for (;;) {
      zmq::message_t part;
      if (!zap->recv(part, zmq::recv_flags::dontwait)) break;
      const bool more = part.more();
      if (parts.size() < 8) parts.push_back(std::move(part));
      if (!more) break;
    }
    if (parts.empty()) return;
    // version, request id, domain, address, identity, mechanism, credentials...
    std::string request_id = parts.size() > 1 ? parts[1].to_string() : std::string();
    std::string status = "400", text = "not authorized", user;
    if (parts.size() >= 7 && parts[0].to_string_view() == "1.0" &&
        parts[5].to_string_view() == "CURVE" && parts[6].size() == 32) {
      std::array<char, 41> z85{};
      zmq_z85_encode(z85.data(), static_cast<const std::uint8_t*>(parts[6].data()), 32);
      const std::string key(z85.data(), 40);
      std::string node;
      if (options.authorize && options.authorize(key, &node) && !node.empty()) {
        status = "200";
        text = "OK";
        user = node + " " + key;
      }
    }
    if (status != "200") {
      ++stats.handshakes_refused;
      // The address is ZeroMQ's text; the key is shown only as Z85 of its 32 bytes.
      std::string address = parts.size() > 3 ? parts[3].to_string() : std::string();
      if (address.size() > 64) address.resize(64);
      std::string reason = "handshake refused: ";
      if (parts.size() >= 7 && parts[5].to_string_view() == "CURVE" && parts[6].size() == 32) {
        std::array<char, 41> z85{};
        zmq_z85_encode(z85.data(), static_cast<const std::uint8_t*>(parts[6].data()), 32);
        reason += "key " + std::string(z85.data(), 40) + " is not on the allowlist";
      } else {
        reason += "not a CURVE handshake";
      }
      refused(address, reason);
    }
    const std::array<std::string, 6> reply{"1.0", request_id, status, text, user, ""};
    for (std::size_t i = 0; i < reply.size(); ++i) {
      zap->send(zmq::buffer(reply[i]),
                i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::Server(Server&&) noexcept = default;
Server& Server::operator=(Server&&) noexcept = default;
Server::~Server() = default;

Result<Server> Server::bind(Context& context, const std::string& endpoint,
                            const ServerOptions& options) {
  if (options.curve) {
    if (!curve_available()) return Status::Internal("this libzmq was built without CURVE support");
    if (!is_z85_key(options.curve->public_key) || !is_z85_key(options.curve->secret_key))
      return Status::InvalidInput("keys", "HQ's CurveZMQ key pair is malformed");
    if (!options.authorize)
      return Status::InvalidInput("allowlist", "a CURVE server needs an authorize callback");
  }
  auto impl = std::make_unique<Impl>(context.impl().ctx, options);
  if (options.curve) {
    try {
      // The ZAP handler must be bound before the server socket accepts connections.
      impl->zap.emplace(context.impl().ctx, zmq::socket_type::rep);
      impl->zap->set(zmq::sockopt::linger, 0);
      impl->zap->bind("inproc://zeromq.zap.01");
    } catch (const zmq::error_t& e) {
      return Status::InvalidInput("keys", std::string("cannot start the ZAP handler: ") + e.what());
    }
  }
  try {
    configure(impl->socket);
    impl->socket.set(zmq::sockopt::handshake_ivl, std::max(0, options.handshake_timeout_ms));
    impl->socket.set(zmq::sockopt::sndhwm, std::max(1, options.queue_limit));
    impl->socket.set(zmq::sockopt::rcvhwm, std::max(1, options.queue_limit));
    impl->start_monitor(context.impl().ctx);
    if (options.curve) {
      impl->socket.set(zmq::sockopt::curve_server, 1);
      impl->socket.set(zmq::sockopt::curve_secretkey, options.curve->secret_key);
      impl->socket.set(zmq::sockopt::zap_domain, "tillsync");
    }
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
      std::array<zmq::pollitem_t, 3> items{{{s.socket.handle(), 0, ZMQ_POLLIN, 0},
                                            {s.monitor->handle(), 0, ZMQ_POLLIN, 0},
                                            {s.zap ? s.zap->handle() : nullptr, 0, ZMQ_POLLIN, 0}}};
      const std::size_t n = s.zap ? 3 : 2;
      if (zmq::poll(items.data(), n, std::chrono::milliseconds(remaining_ms(deadline))) == 0)
        return std::optional<Request>{};
      if ((items[1].revents & ZMQ_POLLIN) != 0) s.drain_monitor();
      if (n == 3 && (items[2].revents & ZMQ_POLLIN) != 0) s.answer_zap();
      if ((items[0].revents & ZMQ_POLLIN) == 0) continue;
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
      if (s.options.curve) {
        // "<node id> <key>" set by answer_zap(); re-checked so a revocation takes effect
        // on connections made before it.
        const char* user = zmq_msg_gets(parts[1].handle(), "User-Id");
        const std::string_view uid = user != nullptr ? std::string_view(user) : std::string_view();
        const auto sp = uid.rfind(' ');
        std::string node;
        if (sp == std::string_view::npos ||
            !s.options.authorize(std::string(uid.substr(sp + 1)), &node) || node.empty() ||
            node != uid.substr(0, sp)) {
          ++s.stats.revoked;
          const char* address = zmq_msg_gets(parts[1].handle(), "Peer-Address");
          s.refused(address != nullptr ? std::string(address).substr(0, 64) : std::string(),
                    "request dropped: the connection's key is no longer on the allowlist");
          continue;  // dropped: the client times out (hq_unreachable) and reconnects
        }
        req.authenticated_node = std::move(node);
      }
      req.peer = parts[0].to_string();
      if (const char* address = zmq_msg_gets(parts[1].handle(), "Peer-Address"); address != nullptr)
        req.peer_address = std::string(address).substr(0, 64);
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
