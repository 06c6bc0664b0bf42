// Persistence of Customer values in the tables described by kCustomerSchema. Used by
// the terminal for its replica and by HQ for its customer master, so both read and
// write customers the same way. All writes take the caller's open Transaction.
#pragma once

#include <functional>
#include <optional>
#include <string_view>
#include <vector>

#include "tillsync/domain.h"
#include "tillsync/status.h"
#include "tillsync/storage/database.h"

namespace tillsync {

inline constexpr std::string_view kCustomerSchema = R"sql(
CREATE TABLE customers (
  guid           BLOB PRIMARY KEY,
  guid_text      TEXT NOT NULL,
  account_number TEXT UNIQUE,
  type           TEXT NOT NULL,
  first_name     TEXT NOT NULL,
  middle_name    TEXT NOT NULL,
  last_name      TEXT NOT NULL,
  org_name       TEXT NOT NULL,
  title          TEXT NOT NULL,
  email          TEXT NOT NULL,
  phone          TEXT NOT NULL,
  language       TEXT NOT NULL,
  currency       TEXT NOT NULL,
  customer_group TEXT NOT NULL,
  receipt_option TEXT NOT NULL,
  receipt_email  TEXT NOT NULL,
  version        INTEGER NOT NULL
) STRICT;
CREATE TABLE addresses (
  guid     BLOB PRIMARY KEY,
  customer BLOB NOT NULL REFERENCES customers(guid),
  position INTEGER NOT NULL,
  purpose  TEXT NOT NULL,
  street   TEXT NOT NULL,
  city     TEXT NOT NULL,
  state    TEXT NOT NULL,
  zip      TEXT NOT NULL,
  country  TEXT NOT NULL
) STRICT;
CREATE INDEX addresses_customer ON addresses(customer);
CREATE TABLE contacts (
  guid     BLOB PRIMARY KEY,
  customer BLOB NOT NULL REFERENCES customers(guid),
  position INTEGER NOT NULL,
  kind     TEXT NOT NULL,
  value    TEXT NOT NULL
) STRICT;
CREATE INDEX contacts_customer ON contacts(customer);
CREATE TABLE affiliations (
  customer BLOB NOT NULL REFERENCES customers(guid),
  position INTEGER NOT NULL,
  name     TEXT NOT NULL,
  PRIMARY KEY (customer, name)
) STRICT;
CREATE TABLE loyalty_cards (
  card_number  TEXT PRIMARY KEY,
  customer     BLOB NOT NULL REFERENCES customers(guid),
  issued_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX loyalty_cards_customer ON loyalty_cards(customer);
)sql";

class CustomerTable {
 public:
  explicit CustomerTable(storage::Database& db) : db_(&db) {}

  // Inserts a new customer with all its children. Fails if the GUID exists.
  Status insert(storage::Transaction& txn, const Customer& c);
  // Replaces the customer row and all its children with `c` (inserting if missing).
  // An account number or loyalty card number another customer holds is a constraint
  // error (nothing is replaced but this customer's own rows).
  Status upsert(storage::Transaction& txn, const Customer& c);
  // The terminal's upsert of a customer as HQ sent it: HQ's word on account and card
  // numbers is final, so another local customer still holding one of `c`'s numbers
  // (HQ handed it out again after a restore) gives it up and shows Pending sync until
  // HQ's feed brings its own. So does a converted customer, or a copy whose creation
  // is not in this terminal's log, holding one of `c`'s address or contact GUIDs (HQ
  // merged it into `c`, or the copy is older than HQ's state); one created here and not
  // converted yet keeps them. Returns how many numbers and children were given up.
  Result<std::int64_t> upsert_from_hq(storage::Transaction& txn, const Customer& c);
  // Updates only the scalar fields, account number and version.
  Status update_scalars(storage::Transaction& txn, const Customer& c);
  Status add_address(storage::Transaction& txn, const Guid& customer, const Address& a);
  // Deletes the customer and its children (no-op when absent).
  Status remove(storage::Transaction& txn, const Guid& customer);

  Result<std::optional<Customer>> get(const Guid& guid);
  Result<std::optional<Customer>> by_account(std::string_view account_number);
  // Case-insensitive substring match on names, e-mail, phone, account number and GUID
  // text; empty text matches all. Ordered by (org_name or last name, first name, GUID).
  // Customers matching `text` in name order, at most `limit` (0: all). `scope`, when
  // given, is one more SQL condition on the customer row, with `scope_value` bound to ?4.
  Result<std::vector<Customer>> search(std::string_view text, std::size_t limit = 0,
                                       std::string_view scope = {}, std::string_view scope_value = {});
  // Every customer in ascending GUID order (for digests).
  Result<std::vector<Customer>> all_by_guid();
  // The same, streamed: pages of 1000 customers, so memory stays bounded whatever the
  // table's size. Stops at the first error `fn` returns.
  Status for_each_by_guid(const std::function<Status(const Customer&)>& fn);
  Result<std::int64_t> count();

 private:
  Status remove_children(const Guid& customer);
  Status insert_children(const Customer& c);
  Status insert_address(const Guid& customer, const Address& a);
  Status insert_contact(const Guid& customer, const Contact& k);
  Status write_row(const Customer& c, bool replace);
  Status load_children(Customer& c);
  Result<std::vector<Customer>> load_rows(storage::Statement& st);
  storage::Database* db_;
};

}  // namespace tillsync
