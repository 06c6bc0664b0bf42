// A small application using tillsync through its installed public headers only:
// GUIDs, the hybrid logical clock, and a node database with a change log.
// Exits 0 when everything behaves, 1 (with a message on stderr) otherwise.
#include <tillsync/clock.h>
#include <tillsync/guid.h>
#include <tillsync/status.h>
#include <tillsync/storage/change_log.h>
#include <tillsync/storage/database.h>
#include <tillsync/storage/schema.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace {

bool check(bool ok, const char* what) {
  if (!ok) std::fprintf(stderr, "tillsync consumer: FAILED: %s\n", what);
  return ok;
}

bool check_status(const tillsync::Status& s, const char* what) {
  if (!s.ok()) std::fprintf(stderr, "tillsync consumer: %s: %s\n", what, s.to_string().c_str());
  return s.ok();
}

bool use_guids() {
  tillsync::GuidGenerator gen(42);
  const tillsync::Guid g = gen.next();
  const auto parsed = tillsync::Guid::parse(g.to_string());
  tillsync::GuidGenerator again(42);
  return check(parsed.has_value() && *parsed == g, "GUID text round trip") &&
         check(again.next() == g, "seeded GUIDs are reproducible") &&
         check(!tillsync::Guid::parse("Pending sync").has_value(), "GUID parse rejects text");
}

bool use_clock() {
  tillsync::ManualClock wall(1'700'000'000'000);
  tillsync::HybridLogicalClock hlc(wall);
  const tillsync::Hlc a = hlc.now();
  wall.set(1'600'000'000'000);  // the wall clock jumps back
  const tillsync::Hlc b = hlc.now();
  return check(a < b, "HLC is monotonic") && check(b.millis() == 1'700'000'000'000, "HLC ms");
}

bool use_storage(const std::filesystem::path& dir) {
  static constexpr tillsync::storage::Migration kMigrations[] = {
      {1, "change log", tillsync::storage::ChangeLog::kSchema}};
  const tillsync::storage::SchemaSpec spec{0x434f4e53, "consumer", kMigrations};

  tillsync::storage::DatabaseOptions options;
  options.create_if_missing = true;
  auto db = tillsync::storage::Database::open((dir / "consumer.db").string(), options);
  if (!check_status(db.status(), "open")) return false;
  if (!check_status(tillsync::storage::migrate(**db, spec), "migrate")) return false;

  tillsync::storage::ChangeLog log(**db);
  tillsync::GuidGenerator gen(1);
  tillsync::storage::LogRow row;
  row.op_id = std::string(gen.next().raw());
  row.entity = std::string(gen.next().raw());
  row.node_id = "S001/T01";
  row.payload = "hello";
  auto txn = tillsync::storage::Transaction::begin(**db);
  if (!check_status(txn.status(), "begin")) return false;
  auto seq = log.append(*txn, row);
  if (!check_status(seq.status(), "append")) return false;
  if (!check_status(txn->commit(), "commit")) return false;

  auto rows = log.read_after(0, 10);
  if (!check_status(rows.status(), "read_after")) return false;
  return check(*seq == 1 && rows->size() == 1 && rows->front().payload == "hello",
               "change log round trip") &&
         check_status(tillsync::storage::check_schema(**db, spec), "check_schema");
}

}  // namespace

int main() {
  std::error_code ec;
  std::string tmpl =
      (std::filesystem::temp_directory_path(ec) / "tillsync-consumer-XXXXXX").string();
  if (ec || ::mkdtemp(tmpl.data()) == nullptr) {
    std::fprintf(stderr, "tillsync consumer: cannot create a temporary directory\n");
    return 1;
  }
  const std::filesystem::path dir(tmpl);
  const bool ok = use_guids() && use_clock() && use_storage(dir);
  std::filesystem::remove_all(dir, ec);
  if (!ok) return 1;
  std::printf("tillsync consumer: ok\n");
  return 0;
}
