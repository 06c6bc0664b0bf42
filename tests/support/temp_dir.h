// A temporary directory removed with everything in it when the object goes away.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace tillsync::testing {

class TempDir {
 public:
  // `in_memory`: prefer /dev/shm (tmpfs) when the machine has it, for tests that create
  // many short-lived databases and care about neither disk nor durability.
  explicit TempDir(bool in_memory = false) {
    std::filesystem::path base = std::filesystem::temp_directory_path();
    std::error_code ec;
    if (in_memory && std::filesystem::is_directory("/dev/shm", ec)) base = "/dev/shm";
    std::string tmpl = (base / "tillsync-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace tillsync::testing
