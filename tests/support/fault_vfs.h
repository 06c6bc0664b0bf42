// A fault-injecting SQLite VFS for simulations (below SQLite, as in leveldb's
// fault_injection_test): it wraps the default VFS and, for database files whose path
// contains an armed marker, from the Nth write or sync on, until disarmed:
//   full, io_error  fails every write and sync with SQLITE_FULL (disk full) or
//                   SQLITE_IOERR (an I/O error). SQLite rolls the transaction back; the
//                   engine must report an error and write nothing.
//   crash           the process dies there (a kill -9 inside a transaction or its
//                   commit): every later write, sync, truncation and deletion of those
//                   files is silently dropped, while the code above carries on, unaware.
//                   What it does from then on must be ignored (crashed() says it
//                   happened); the test drops the objects (their closing writes dropped
//                   too), disarms, and reopens the files, and SQLite recovers them as
//                   after a real crash: what was written before the crash point stays.
//
// install() registers it as the process's default VFS (once; every connection opened
// afterwards goes through it). Arming and disarming are for one thread at a time (the
// simulation's); the counters are plain integers.
#pragma once

#include <sqlite3.h>

#include <cstring>
#include <map>
#include <string>

namespace tillsync::testing {

class FaultVfs {
 public:
  enum class Fault { full, io_error, crash };

  static void install() {
    static bool installed = false;
    if (installed) return;
    installed = true;
    state().real = sqlite3_vfs_find(nullptr);
    sqlite3_vfs& v = state().vfs;
    v = *state().real;
    v.zName = "tillsync-fault";
    v.szOsFile = static_cast<int>(sizeof(File)) + state().real->szOsFile;
    v.xOpen = &open;
    v.xDelete = &remove;
    sqlite3_vfs_register(&v, /*makeDflt=*/1);
  }

  // Files whose path contains `marker` fail from their `after`-th write or sync on
  // (0: the next one), with `fault`, until disarm().
  static void arm(const std::string& marker, int after, Fault fault) {
    state().armed[marker] = Armed{after, fault};
  }
  static void disarm(const std::string& marker) { state().armed.erase(marker); }
  // Whether an armed crash of `marker` has happened (the process holding those files is
  // dead; disarm() once its objects are gone).
  static bool crashed(const std::string& marker) {
    auto it = state().armed.find(marker);
    return it != state().armed.end() && it->second.crashed;
  }
  // Crash points reached so far.
  static long crashes() { return state().crashes; }
  static void disarm_all() { state().armed.clear(); }
  // Writes and syncs refused so far (the simulation reports it: faults that never fire
  // prove nothing).
  static long refused() { return state().refused; }

 private:
  struct Armed {
    int after = 0;
    Fault fault = Fault::full;
    bool crashed = false;
  };
  struct State {
    sqlite3_vfs vfs{};
    sqlite3_vfs* real = nullptr;
    std::map<std::string, Armed> armed;
    long refused = 0;
    long crashes = 0;
  };
  static State& state() {
    static State s;
    return s;
  }

  struct File {
    sqlite3_file base;
    std::string* path;  // owned; freed at close
    sqlite3_file* real() { return reinterpret_cast<sqlite3_file*>(this + 1); }
  };

  static constexpr int kDropped = -1;  // check(): the process is dead, do nothing

  // SQLITE_OK, the fault of an armed marker this path contains, or kDropped.
  static int check(const std::string& path) {
    for (auto& [marker, armed] : state().armed) {
      if (path.find(marker) == std::string::npos) continue;
      if (armed.crashed) return kDropped;
      if (armed.after > 0) {
        --armed.after;
        continue;
      }
      if (armed.fault == Fault::crash) {
        armed.crashed = true;
        ++state().crashes;
        return kDropped;
      }
      ++state().refused;
      return armed.fault == Fault::full ? SQLITE_FULL : SQLITE_IOERR_WRITE;
    }
    return SQLITE_OK;
  }
  static bool dead(const std::string& path) {
    for (auto& [marker, armed] : state().armed)
      if (armed.crashed && path.find(marker) != std::string::npos) return true;
    return false;
  }

  static File* of(sqlite3_file* f) { return reinterpret_cast<File*>(f); }

  static int close(sqlite3_file* f) {
    int rc = of(f)->real()->pMethods ? of(f)->real()->pMethods->xClose(of(f)->real()) : SQLITE_OK;
    delete of(f)->path;
    return rc;
  }
  static int read(sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
    return of(f)->real()->pMethods->xRead(of(f)->real(), buf, n, off);
  }
  static int write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
    const int rc = check(*of(f)->path);
    if (rc == kDropped) return SQLITE_OK;
    if (rc != SQLITE_OK) return rc;
    return of(f)->real()->pMethods->xWrite(of(f)->real(), buf, n, off);
  }
  static int truncate(sqlite3_file* f, sqlite3_int64 size) {
    if (dead(*of(f)->path)) return SQLITE_OK;
    return of(f)->real()->pMethods->xTruncate(of(f)->real(), size);
  }
  static int sync(sqlite3_file* f, int flags) {
    const int rc = check(*of(f)->path);
    if (rc == kDropped) return SQLITE_OK;
    if (rc != SQLITE_OK) return rc == SQLITE_FULL ? SQLITE_FULL : SQLITE_IOERR_FSYNC;
    return of(f)->real()->pMethods->xSync(of(f)->real(), flags);
  }
  static int remove(sqlite3_vfs*, const char* name, int sync_dir) {
    if (name != nullptr && dead(name)) return SQLITE_OK;  // a dead process deletes nothing
    return state().real->xDelete(state().real, name, sync_dir);
  }
  static int file_size(sqlite3_file* f, sqlite3_int64* size) {
    return of(f)->real()->pMethods->xFileSize(of(f)->real(), size);
  }
  static int lock(sqlite3_file* f, int level) { return of(f)->real()->pMethods->xLock(of(f)->real(), level); }
  static int unlock(sqlite3_file* f, int level) { return of(f)->real()->pMethods->xUnlock(of(f)->real(), level); }
  static int check_reserved(sqlite3_file* f, int* out) {
    return of(f)->real()->pMethods->xCheckReservedLock(of(f)->real(), out);
  }
  static int file_control(sqlite3_file* f, int op, void* arg) {
    return of(f)->real()->pMethods->xFileControl(of(f)->real(), op, arg);
  }
  static int sector_size(sqlite3_file* f) { return of(f)->real()->pMethods->xSectorSize(of(f)->real()); }
  static int device_characteristics(sqlite3_file* f) {
    return of(f)->real()->pMethods->xDeviceCharacteristics(of(f)->real());
  }
  static int shm_map(sqlite3_file* f, int page, int size, int extend, void volatile** out) {
    return of(f)->real()->pMethods->xShmMap(of(f)->real(), page, size, extend, out);
  }
  static int shm_lock(sqlite3_file* f, int offset, int n, int flags) {
    return of(f)->real()->pMethods->xShmLock(of(f)->real(), offset, n, flags);
  }
  static void shm_barrier(sqlite3_file* f) { of(f)->real()->pMethods->xShmBarrier(of(f)->real()); }
  static int shm_unmap(sqlite3_file* f, int del) { return of(f)->real()->pMethods->xShmUnmap(of(f)->real(), del); }
  static int fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
    return of(f)->real()->pMethods->xFetch(of(f)->real(), off, n, out);
  }
  static int unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
    return of(f)->real()->pMethods->xUnfetch(of(f)->real(), off, p);
  }

  static const sqlite3_io_methods* methods() {
    static const sqlite3_io_methods m = {
        3,        &close,      &read,       &write,   &truncate,       &sync,          &file_size,
        &lock,    &unlock,     &check_reserved, &file_control, &sector_size, &device_characteristics,
        &shm_map, &shm_lock,   &shm_barrier, &shm_unmap, &fetch, &unfetch};
    return &m;
  }

  static int open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags, int* out_flags) {
    File* f = of(file);
    std::memset(f, 0, sizeof(File));
    int rc = state().real->xOpen(state().real, name, f->real(), flags, out_flags);
    if (rc != SQLITE_OK) return rc;
    f->path = new std::string(name != nullptr ? name : "");
    f->base.pMethods = methods();
    return SQLITE_OK;
  }
};

}  // namespace tillsync::testing
