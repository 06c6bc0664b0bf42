#include "tillsync/storage/schema.h"

#include <string>

namespace tillsync::storage {
namespace {

struct Stamp {
  std::int64_t application_id = 0;
  std::int64_t user_version = 0;
  std::int64_t objects = 0;  // tables, indexes, ... already in the file
};

Result<Stamp> read_stamp(Database& db) {
  Stamp s;
  TS_ASSIGN_OR_RETURN(auto app, db.query_int("PRAGMA application_id"));
  TS_ASSIGN_OR_RETURN(auto ver, db.query_int("PRAGMA user_version"));
  TS_ASSIGN_OR_RETURN(auto n, db.query_int("SELECT count(*) FROM sqlite_schema"));
  s.application_id = app.value_or(0);
  s.user_version = ver.value_or(0);
  s.objects = n.value_or(0);
  return s;
}

int latest_version(const SchemaSpec& spec) {
  return spec.migrations.empty() ? 0 : spec.migrations.back().version;
}

Status check_stamp(const Database& db, const Stamp& s, const SchemaSpec& spec) {
  const bool blank = s.application_id == 0 && s.user_version == 0 && s.objects == 0;
  if (blank) return Status::Ok();
  if (s.application_id != static_cast<std::int64_t>(spec.application_id)) {
    return {Code::not_a_tillsync_database,
            db.path() + " is not a tillsync " + std::string(spec.kind) + " database"};
  }
  if (s.user_version > latest_version(spec)) {
    return Status::UnsupportedVersion(
        db.path() + " has schema version " + std::to_string(s.user_version) +
        ", newer than this tillsync understands (" + std::to_string(latest_version(spec)) +
        "); upgrade tillsync");
  }
  return Status::Ok();
}

}  // namespace

Status check_schema(Database& db, const SchemaSpec& spec) {
  TS_ASSIGN_OR_RETURN(Stamp s, read_stamp(db));
  TS_RETURN_IF_ERROR(check_stamp(db, s, spec));
  if (s.user_version == 0) {
    return {Code::not_a_tillsync_database,
            db.path() + " is not an initialized tillsync " + std::string(spec.kind) + " database"};
  }
  if (s.user_version < latest_version(spec)) {
    return Status::UnsupportedVersion(
        db.path() + " has schema version " + std::to_string(s.user_version) +
        ", older than this tillsync's (" + std::to_string(latest_version(spec)) +
        "); it must be migrated before use");
  }
  return Status::Ok();
}

Status upgrade(Database& db, const SchemaSpec& spec) {
  TS_ASSIGN_OR_RETURN(Stamp s, read_stamp(db));
  if (s.user_version == 0) return check_schema(db, spec);  // blank or foreign: refuse
  TS_RETURN_IF_ERROR(check_stamp(db, s, spec));
  TS_RETURN_IF_ERROR(migrate(db, spec));
  return check_schema(db, spec);
}

Status migrate(Database& db, const SchemaSpec& spec) {
  TS_ASSIGN_OR_RETURN(Stamp s, read_stamp(db));
  TS_RETURN_IF_ERROR(check_stamp(db, s, spec));
  for (const Migration& m : spec.migrations) {
    if (m.version <= s.user_version) continue;
    TS_ASSIGN_OR_RETURN(auto txn, Transaction::begin(db));
    TS_RETURN_IF_ERROR(db.exec(m.sql));
    // Pragmas take no bound parameters; the values are integers from our own table.
    TS_RETURN_IF_ERROR(db.exec("PRAGMA application_id=" + std::to_string(spec.application_id)));
    TS_RETURN_IF_ERROR(db.exec("PRAGMA user_version=" + std::to_string(m.version)));
    TS_RETURN_IF_ERROR(txn.commit());
  }
  return Status::Ok();
}

}  // namespace tillsync::storage
