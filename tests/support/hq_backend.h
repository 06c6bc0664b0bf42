// Which HQ backend a test runs against. SQLite (a file in the test's TempDir) unless
// TILLSYNC_TEST_BACKEND=postgresql, which the pg-labelled ctest entries set: then
// TILLSYNC_PG_URL names a PostgreSQL server (scripts/with-postgres.sh starts one), each
// HqLocation is a schema of its own, dropped afterwards, and without TILLSYNC_PG_URL
// every test of the executable is skipped.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "support/temp_dir.h"
#include "tillsync/storage/pg.h"

namespace tillsync::testing {

inline bool testing_postgres() {
  const char* b = std::getenv("TILLSYNC_TEST_BACKEND");
  return b != nullptr && std::string(b) == "postgresql";
}

inline std::string pg_server_url() {
  const char* u = std::getenv("TILLSYNC_PG_URL");
  return u != nullptr ? u : "";
}

// The PostgreSQL variant without a server: when the run asked for PostgreSQL
// (TILLSYNC_REQUIRE_PG=1, which scripts/with-postgres.sh sets) that is a failure;
// otherwise the test is skipped, visibly: exit code 77, which ctest reports as Skipped
// (the pg registrations set SKIP_RETURN_CODE 77). A GTEST_SKIP here would report PASSED.
class BackendEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    if (!testing_postgres() || !pg_server_url().empty()) return;
    const char* required = std::getenv("TILLSYNC_REQUIRE_PG");
    const bool must = required != nullptr && std::string(required) == "1";
    std::fprintf(stderr, "%s: TILLSYNC_PG_URL is not set: no PostgreSQL server for the pg tests "
                         "(bash scripts/with-postgres.sh ctest ... starts one)\n",
                 must ? "FAILED" : "SKIPPED");
    std::fflush(stderr);
    std::_Exit(must ? 1 : 77);
  }
};
inline ::testing::Environment* const kBackendEnvironment =
    ::testing::AddGlobalTestEnvironment(new BackendEnvironment);

// Where one test's HQ lives: a file path, or a postgresql:// URL whose search_path is a
// fresh schema.
class HqLocation {
 public:
  explicit HqLocation(const TempDir& dir, const std::string& name = "hq.db") {
    if (!testing_postgres()) {
      location_ = dir.file(name);
      return;
    }
    std::random_device rd;
    schema_ = "t_" + std::to_string(rd()) + "_" + std::to_string(rd());
    const std::string base = pg_server_url();
    auto admin = storage::PgConnection::open(base);
    if (!admin.ok()) {
      ADD_FAILURE() << admin.status().to_string();
      return;
    }
    Status s = (*admin)->exec("CREATE SCHEMA " + schema_);
    if (!s.ok()) ADD_FAILURE() << s.to_string();
    location_ = storage::postgres_url_in_schema(base, schema_);
  }
  ~HqLocation() {
    if (schema_.empty()) return;
    auto admin = storage::PgConnection::open(pg_server_url());
    if (!admin.ok()) return;
    (void)(*admin)->exec("SET lock_timeout = '10s'; DROP SCHEMA " + schema_ + " CASCADE");
  }
  HqLocation(const HqLocation&) = delete;
  HqLocation& operator=(const HqLocation&) = delete;

  // Throws the HQ database away (a restore gone wrong, a new HQ): the file, or every
  // table of the schema.
  void wipe() {
    if (schema_.empty()) {
      for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(location_ + suffix);
      return;
    }
    auto admin = storage::PgConnection::open(pg_server_url());
    ASSERT_TRUE(admin.ok()) << admin.status().to_string();
    Status s = (*admin)->exec("DROP SCHEMA " + schema_ + " CASCADE; CREATE SCHEMA " + schema_);
    ASSERT_TRUE(s.ok()) << s.to_string();
  }

  // A backup of HQ's database as an operator takes it, kept under `name` in `dir`: a
  // copy of the SQLite file (HQ stopped), or `pg_dump` of the schema. restore() puts it
  // back the way an operator restores (file copied over; schema dropped, dump loaded).
  void backup(const TempDir& dir, const std::string& name) {
    const std::string file = dir.file(name);
    if (schema_.empty()) {
      std::filesystem::copy_file(location_, file, std::filesystem::copy_options::overwrite_existing);
      return;
    }
    const std::string cmd = "pg_dump --no-owner --schema=" + schema_ + " -f '" + file + "' '" +
                            pg_server_url() + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  void restore(const TempDir& dir, const std::string& name) {
    const std::string file = dir.file(name);
    if (schema_.empty()) {
      for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(location_ + suffix);
      std::filesystem::copy_file(file, location_, std::filesystem::copy_options::overwrite_existing);
      return;
    }
    {
      auto admin = storage::PgConnection::open(pg_server_url());
      ASSERT_TRUE(admin.ok()) << admin.status().to_string();
      Status s = (*admin)->exec("DROP SCHEMA " + schema_ + " CASCADE");
      ASSERT_TRUE(s.ok()) << s.to_string();
    }
    const std::string cmd = "psql -q -v ON_ERROR_STOP=1 -f '" + file + "' '" + pg_server_url() + "' >/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }

  const std::string& str() const { return location_; }
  operator const std::string&() const { return location_; }  // NOLINT(google-explicit-constructor)

 private:
  std::string location_;
  std::string schema_;
};

}  // namespace tillsync::testing
