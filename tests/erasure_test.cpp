// Issue 18, item 5: the right to erasure. `hq erase-customer` removes a customer's
// personal data from everything HQ keeps, the erasure reaches every terminal (which
// deletes its copy and redacts its change log), a late operation for the erased GUID
// fails with `erased` and never recreates the customer, and captures exported
// afterwards hold none of it. Proven by searching the bytes of every file tillsync
// wrote (databases with their write-ahead logs, captures) for the erased name, e-mail
// and phone; on PostgreSQL, every row of every HQ table as the server prints it. HQ
// serves on a real loopback socket with its job parked; one manual clock.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "support/clocked_hq.h"
#include "tillsync/capture.h"
#include "tillsync/storage/pg.h"

namespace tillsync {
namespace {

using testing::new_person;
using testing::Terminal;

// The erased customer's personal data, spelled so that nothing else in the files can
// hold it by chance.
constexpr const char* kFirst = "Zoltanerase";
constexpr const char* kLast = "Quimbyerase";
constexpr const char* kEmail = "zq.erase@example.org";
constexpr const char* kOldEmail = "zq.formerly@example.org";  // overwritten before the erasure
constexpr const char* kRivalEmail = "zq.rival@example.org";   // a concurrent edit (journaled)
constexpr const char* kLateEmail = "zq.late@example.org";     // sent after the erasure
constexpr const char* kPhone = "+15550199777";
constexpr const char* kStreet = "Erasestrasse 9";

std::vector<std::string> needles() {
  return {kFirst, kLast, kEmail, kOldEmail, kRivalEmail, kLateEmail, "5550199777", kStreet};
}

std::string hex(std::string_view s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class ErasureTest : public testing::ClockedHqTest {
 protected:
  std::unique_ptr<Terminal> terminal(const std::string& store) { return terminal_with(store, async_config(store)); }

  NewCustomer person() {
    NewCustomer n = new_person(kFirst, kLast);
    n.email = kOldEmail;
    n.phone = kPhone;
    Address a;
    a.purpose = "home";
    a.street = kStreet;
    a.city = "Basel";
    a.zip = "4051";
    a.country = "CH";
    n.addresses.push_back(a);
    return n;
  }
  Customer create(Terminal& t, const NewCustomer& n) {
    auto out = t.node().create_customer(n);
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    return out.ok() ? out->customer : Customer{};
  }
  void edit(Terminal& t, const Customer& c, Field f, const std::string& value) {
    auto out = t.node().edit_customer(c.guid.to_string(), {{f, value}});
    ASSERT_TRUE(out.ok()) << out.status().to_string();
  }
  std::unique_ptr<HqStore> store() {
    const std::string& at = hq_location.str();
    auto s = at.starts_with("postgresql:") ? open_postgres_hq(at) : open_sqlite_hq(at);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    return s.ok() ? std::move(s).value() : nullptr;
  }
  std::optional<Customer> at_hq(const Guid& g) {
    auto all = hq->inspect()->customers("");
    EXPECT_TRUE(all.ok());
    for (const Customer& c : *all)
      if (c.guid == g) return c;
    return std::nullopt;
  }

  // What `store export-log` and `hq export-log` write, as capture files in the test's
  // directory.
  void export_terminal(Terminal& t, const std::string& file) {
    CaptureHeader h;
    h.node_id = t.node().node_id();
    auto rows = t.node().read_log(0, 100'000);
    ASSERT_TRUE(rows.ok()) << rows.status().to_string();
    h.first_seq = rows->empty() ? 0 : rows->front().seq;
    write_capture(dir.file(file), h, *rows);
  }
  void export_hq(const std::string& node, const std::string& file) {
    auto rows = store()->received(node, 0, 100'000);
    ASSERT_TRUE(rows.ok()) << rows.status().to_string();
    ASSERT_FALSE(rows->empty()) << "HQ received nothing from " << node;
    CaptureHeader h;
    h.node_id = node;
    h.first_seq = rows->front().seq;
    write_capture(dir.file(file), h, *rows);
  }
  static void write_capture(const std::string& path, const CaptureHeader& h, const std::vector<LogRecord>& rows) {
    auto w = CaptureWriter::create(path, h);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    for (const LogRecord& r : rows) ASSERT_TRUE(w->append(r).ok());
    ASSERT_TRUE(w->finish().ok());
  }

  // Every file in the test's directory (databases, their -wal and -shm files,
  // captures) that holds one of the erased values, with the value.
  std::vector<std::string> files_holding_erased_data() {
    std::vector<std::string> found;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir.path())) {
      if (!entry.is_regular_file()) continue;
      const std::string bytes = file_bytes(entry.path());
      for (const std::string& n : needles())
        if (bytes.find(n) != std::string::npos) found.push_back(entry.path().filename().string() + ": " + n);
    }
    return found;
  }
  // On PostgreSQL: every row of every table of HQ's schema as the server prints it
  // (bytea in hex), searched for the values and their hex spelling.
  std::vector<std::string> pg_rows_holding_erased_data() {
    std::vector<std::string> found;
    auto db = storage::PgConnection::open(hq_location.str());
    if (!db.ok()) {
      ADD_FAILURE() << db.status().to_string();
      return found;
    }
    auto tables = (*db)->run(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
        "AND table_type = 'BASE TABLE' ORDER BY 1");
    EXPECT_TRUE(tables.ok()) << tables.status().to_string();
    if (!tables.ok()) return found;
    EXPECT_GT(tables->size(), 10);
    for (int i = 0; i < tables->size(); ++i) {
      const std::string table = tables->text(i, 0);
      for (const std::string& n : needles()) {
        auto hits = (*db)->query_i64("SELECT count(*) FROM " + table +
                                         " x WHERE strpos(x::text, $1) > 0 OR strpos(x::text, $2) > 0",
                                     storage::PgParams().text(n).text(hex(n)));
        EXPECT_TRUE(hits.ok()) << table << ": " << hits.status().to_string();
        if (hits.ok() && hits->value_or(0) > 0) found.push_back(table + ": " + n);
      }
    }
    return found;
  }
  bool on_postgres() const { return hq_location.str().starts_with("postgresql:"); }
};

// The whole path: a customer with history (an overwritten e-mail, an address, a
// journaled conflict, duplicate match keys) on three terminals, one of them offline
// during the erasure with an edit of the customer still unsent.
TEST_F(ErasureTest, AnErasedCustomerLeavesNoTraceInAnyFileAndNeverComesBack) {
  auto a = terminal("S001");
  auto b = terminal("S002");
  auto c = terminal("S003");
  for (auto* t : {a.get(), b.get(), c.get()}) sync(*t);
  Customer x = create(*a, person());
  Customer kept = create(*a, new_person("Kept", "Customer"));
  sync(*a);
  run_job();
  for (auto* t : {a.get(), b.get(), c.get()}) sync(*t);
  // Concurrent edits of the e-mail on two terminals: the journal holds both values.
  edit(*a, x, Field::email, kEmail);
  clock.advance(1000);
  edit(*b, x, Field::email, kRivalEmail);
  clock.advance(1000);
  edit(*a, x, Field::email, kEmail);
  sync(*a);
  sync(*b);
  run_job();
  for (auto* t : {a.get(), b.get(), c.get()}) sync(*t);
  ASSERT_FALSE(hq->inspect()->conflicts()->empty()) << "the test needs a journaled conflict";
  // Terminal C goes offline with an edit of X not yet sent.
  edit(*c, x, Field::email, kLateEmail);
  ASSERT_FALSE(files_holding_erased_data().empty()) << "the search must find the data before the erasure";
  if (on_postgres()) {
    ASSERT_FALSE(pg_rows_holding_erased_data().empty()) << "the search must find the data before the erasure";
  }

  auto erased = hq->inspect()->erase_customer(*at_hq(x.guid)->account_number);
  ASSERT_TRUE(erased.ok()) << erased.status().to_string();
  EXPECT_EQ(erased->customer, x.guid);
  EXPECT_FALSE(erased->already_erased);
  EXPECT_GT(erased->rows.received, 0);
  EXPECT_GT(erased->rows.feed, 0);
  EXPECT_GT(erased->rows.conflicts, 0);
  if (!on_postgres()) {
    EXPECT_TRUE(erased->scrubbed);
  }
  EXPECT_FALSE(at_hq(x.guid));
  EXPECT_TRUE(at_hq(kept.guid));

  for (auto* t : {a.get(), b.get()}) sync(*t);
  // The offline terminal comes back: its edit reaches HQ after the erasure and fails.
  sync(*c);
  run_job();
  sync(*c);
  for (auto* t : {a.get(), b.get(), c.get()}) {
    auto gone = t->node().find(x.guid.to_string());
    EXPECT_FALSE(gone.ok()) << t->node().node_id() << " still has the erased customer";
    EXPECT_TRUE(t->node().find(kept.guid.to_string()).ok()) << t->node().node_id();
    EXPECT_EQ(t->node().digest()->hex, hq->inspect()->digest()->hex) << t->node().node_id();
  }
  EXPECT_FALSE(at_hq(x.guid)) << "a late operation recreated the erased customer";
  auto late = store()->received("S003/T01", 0, 1000);
  ASSERT_TRUE(late.ok());
  ASSERT_FALSE(late->empty());
  for (const LogRecord& r : *late) {
    if (r.entity == x.guid) {
      EXPECT_TRUE(r.payload.empty()) << "HQ kept the late operation's content";
    }
  }
  bool failed_erased = false;
  auto statuses = hq->inspect()->sync_status(std::nullopt);
  ASSERT_TRUE(statuses.ok());
  for (const SyncStatusRecord& s : *statuses) {
    if (s.guid != x.guid) continue;
    EXPECT_EQ(s.status, SyncStatus::failed);
    EXPECT_FALSE(s.account_number);
    failed_erased = s.last_error.find("erased") != std::string::npos;
  }
  EXPECT_TRUE(failed_erased) << "the status view does not say the customer was erased";
  auto journal = hq->inspect()->conflicts();
  ASSERT_TRUE(journal.ok());
  for (const ConflictRecord& k : *journal) {
    if (k.customer != x.guid) continue;
    EXPECT_EQ(k.kept, "(erased)");
    EXPECT_EQ(k.lost, "(erased)");
  }
  // A real-time request for the GUID, even a creation, is refused.
  Customer again = x;
  auto recreate = hq->inspect()->rts_create("S002/T01", Guid::parse("0190a5c0-0000-7000-8000-0000000000e1").value(), again);
  EXPECT_EQ(recreate.status().code(), Code::erased) << recreate.status().to_string();
  auto edit_at_hq = hq->inspect()->edit_customer(x.guid.to_string(), {{Field::email, "a@b.example"}});
  EXPECT_EQ(edit_at_hq.status().code(), Code::erased) << edit_at_hq.status().to_string();

  // Captures exported afterwards, from every terminal and of what HQ received.
  for (auto* t : {a.get(), b.get(), c.get()}) {
    const std::string store_id = t->node().node_id().substr(0, 4);
    export_terminal(*t, store_id + ".capture");
    export_hq(t->node().node_id(), store_id + "-at-hq.capture");
  }
  EXPECT_EQ(files_holding_erased_data(), std::vector<std::string>{});
  if (on_postgres()) {
    EXPECT_EQ(pg_rows_holding_erased_data(), std::vector<std::string>{});
  }
  // Erasing again is harmless.
  auto twice = hq->inspect()->erase_customer(x.guid.to_string());
  ASSERT_TRUE(twice.ok()) << twice.status().to_string();
  EXPECT_TRUE(twice->already_erased);
}

// A terminal whose pull position is one of the erased customer's feed entries pulls on
// without a reset: the redacted entry keeps its mark.
TEST_F(ErasureTest, ATerminalPositionedOnAnErasedEntryPullsOnWithoutAReset) {
  auto a = terminal("S001");
  auto b = terminal("S002");
  sync(*a);
  sync(*b);
  Customer x = create(*a, person());
  sync(*a);
  run_job();
  sync(*b);  // b's position: X's entry, the newest of the feed
  ASSERT_TRUE(b->node().find(x.guid.to_string()).ok());
  ASSERT_TRUE(hq->inspect()->erase_customer(x.guid.to_string()).ok());
  sync(*b);
  EXPECT_FALSE(b->node().find(x.guid.to_string()).ok());
  auto status = b->node().status();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->last_recovery, "") << "the erasure looked like a restored HQ";
}

// A GUID HQ knows nothing of is not_found; an account number likewise.
TEST_F(ErasureTest, ErasingWhatHqDoesNotHoldIsNotFound) {
  auto r = hq->inspect()->erase_customer("0190a5c0-0000-7000-8000-00000000dead");
  EXPECT_EQ(r.status().code(), Code::not_found) << r.status().to_string();
  auto n = hq->inspect()->erase_customer("C999999999");
  EXPECT_EQ(n.status().code(), Code::not_found) << n.status().to_string();
}

// A customer whose creation HQ refused (it failed validation at HQ) is erased by its
// GUID: the received creation is redacted and the terminal that made it deletes it.
TEST_F(ErasureTest, ACreationHqRefusedIsErasedByItsGuid) {
  auto a = terminal("S001");
  sync(*a);
  NewCustomer n = person();
  Customer x = create(*a, n);
  sync(*a);
  // Refused at HQ: poison the staged creation (as a till with other rules would send).
  {
    auto s = store();
    auto tx = s->begin();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE((*tx)->set_state("S001/T01", 1, StagedState::failed, "invalid e-mail").ok());
    ASSERT_TRUE((*tx)->commit().ok());
  }
  ASSERT_FALSE(at_hq(x.guid));
  auto r = hq->inspect()->erase_customer(x.guid.to_string());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_FALSE(r->account_number);
  EXPECT_EQ(r->rows.received, 1);
  sync(*a);
  EXPECT_FALSE(a->node().find(x.guid.to_string()).ok());
  export_terminal(*a, "a.capture");
  export_hq("S001/T01", "hq.capture");
  EXPECT_EQ(files_holding_erased_data(), std::vector<std::string>{});
}

}  // namespace
}  // namespace tillsync
