// A child process running the real `tillsync` binary, for end-to-end tests: stdout
// through a pipe (read line by line or to the end), stderr into a file, stdin from
// /dev/null. Killed (SIGKILL) and reaped by the destructor if still running, so a failed
// assertion never leaves a process behind. Waiting is bounded by timeouts that only a
// broken or badly overloaded machine reaches; nothing here sleeps.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

extern char** environ;

namespace tillsync::testing {

class Process {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr int kDefaultTimeoutMs = 30'000;

  // `env`: "NAME=value" entries added to (or replacing those of) this process's
  // environment for the child.
  Process(const std::string& binary, const std::vector<std::string>& args, std::string err_path,
          const std::vector<std::string>& env = {})
      : err_path_(std::move(err_path)) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    std::vector<std::string> storage{binary};
    storage.insert(storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& s : storage) argv.push_back(s.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string_view entry(*e);
      const bool replaced = std::any_of(env.begin(), env.end(), [&](const std::string& mine) {
        const auto eq = mine.find('=');
        return entry.substr(0, entry.find('=')) == std::string_view(mine).substr(0, eq);
      });
      if (!replaced) envp.push_back(*e);
    }
    std::vector<std::string> env_storage(env);
    for (std::string& e : env_storage) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(fds[0]);
      throw std::runtime_error(std::string("posix_spawn failed: ") + std::strerror(rc));
    }
    out_fd_ = fds[0];
  }
  ~Process() {
    if (pid_ > 0 && exit_ < 0) (void)kill_and_wait();
    if (out_fd_ >= 0) ::close(out_fd_);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }

  // The next line of stdout (without '\n'); nullopt at end of output or timeout.
  std::optional<std::string> read_line(int timeout_ms = kDefaultTimeoutMs) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        out_ += line + "\n";
        return line;
      }
      if (!fill(remaining(deadline))) return std::nullopt;
    }
  }

  // Reads stdout to its end and reaps; the exit code, 128+N for signal N, -1 on timeout.
  int wait(int timeout_ms = kDefaultTimeoutMs) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (fill(remaining(deadline))) {
    }
    if (out_fd_ >= 0 && remaining(deadline) == 0) return -1;
    out_ += buffer_;
    buffer_.clear();
    return reap();
  }

  int signal_and_wait(int sig, int timeout_ms = kDefaultTimeoutMs) {
    ::kill(pid_, sig);
    return wait(timeout_ms);
  }

  // SIGKILL now, then reap (output not read further).
  int kill_and_wait() {
    ::kill(pid_, SIGKILL);
    return reap();
  }

  const std::string& out() const { return out_; }
  std::string err() const {
    std::ifstream in(err_path_, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

 private:
  static int remaining(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return left.count() > 0 ? static_cast<int>(left.count()) : 0;
  }

  int reap() {
    if (exit_ >= 0) return exit_;
    int wstatus = 0;
    while (::waitpid(pid_, &wstatus, 0) < 0 && errno == EINTR) {
    }
    exit_ = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    return exit_;
  }

  // Appends what arrives within `timeout_ms`; false at end of file or timeout.
  bool fill(int timeout_ms) {
    if (out_fd_ < 0) return false;
    pollfd p{out_fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) return true;
    if (r <= 0) return false;
    char buf[4096];
    const ssize_t n = ::read(out_fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) return true;
    if (n <= 0) {
      ::close(out_fd_);
      out_fd_ = -1;
      return false;
    }
    buffer_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int exit_ = -1;
  std::string err_path_;
  std::string buffer_;
  std::string out_;
};

}  // namespace tillsync::testing
