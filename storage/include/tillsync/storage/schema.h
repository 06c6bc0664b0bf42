// Versioned schemas: numbered migrations recorded in PRAGMA user_version, and an
// application id (PRAGMA application_id) that marks a file as a tillsync database of a
// given kind (terminal, HQ).
//
// Errors: Code::unsupported_version when the file's schema is newer than the code;
// Code::not_a_tillsync_database when the file is an SQLite database of something else
// (or a tillsync database of another kind). Migrations run in one transaction each.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "tillsync/status.h"
#include "tillsync/storage/database.h"

namespace tillsync::storage {

struct Migration {
  int version;                   // 1, 2, 3, ... dense
  std::string_view description;  // for logs and docs
  std::string_view sql;          // parameterless DDL
};

struct SchemaSpec {
  std::uint32_t application_id;  // PRAGMA application_id of this kind of database
  std::string_view kind;         // "terminal", "HQ": used in error messages
  std::span<const Migration> migrations;
};

// Brings `db` to the latest version of `spec`. A brand-new empty file is stamped with
// the application id and migrated from version 0.
Status migrate(Database& db, const SchemaSpec& spec);

// Checks, without changing anything, that `db` holds the current schema of `spec`:
// same application id and exactly the latest version. A blank file is
// not_a_tillsync_database; an older or newer version is unsupported_version (an older
// one becomes current through migrate()).
Status check_schema(Database& db, const SchemaSpec& spec);

// Opening an existing database: refuses a blank file (not_a_tillsync_database), a
// foreign or newer one as check_schema() does, and brings an older tillsync schema up to
// date with migrate(). What a node or HQ calls on open, so upgrades are automatic.
Status upgrade(Database& db, const SchemaSpec& spec);

}  // namespace tillsync::storage
