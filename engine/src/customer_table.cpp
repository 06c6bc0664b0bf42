#include "customer_table.h"

#include <string>

#include "tillsync/operations.h"

namespace tillsync {
namespace {

constexpr std::string_view kColumns =
    "guid, account_number, type, first_name, middle_name, last_name, org_name, title, email, "
    "phone, language, currency, customer_group, receipt_option, receipt_email, version";

std::string select_sql(std::string_view where_and_order) {
  std::string sql = "SELECT ";
  sql += kColumns;
  sql += " FROM customers ";
  sql += where_and_order;
  return sql;
}

Customer read_row(const storage::Statement& st) {
  Customer c;
  c.guid = Guid::from_raw(st.column_blob(0)).value_or(Guid{});
  c.account_number = st.column_optional_text(1);
  c.type = parse_customer_type(st.column_text(2)).value_or(CustomerType::person);
  int col = 3;
  for (Field f : all_fields()) c.get(f) = st.column_text(col++);
  c.version = st.column_int64(col);
  return c;
}

// LIKE pattern for a substring match, with the pattern characters escaped.
std::string like_pattern(std::string_view text) {
  std::string p = "%";
  for (char ch : text) {
    if (ch == '%' || ch == '_' || ch == '\\') p += '\\';
    p += ch;
  }
  p += '%';
  return p;
}

}  // namespace

Status CustomerTable::write_row(const Customer& c, bool replace) {
  // Replacing is by GUID only: a unique account number held by another customer is a
  // constraint error, never a silent delete of that customer (INSERT OR REPLACE would).
  const char* sql = replace
      ? "INSERT INTO customers(guid, guid_text, account_number, type, first_name, "
        "middle_name, last_name, org_name, title, email, phone, language, currency, "
        "customer_group, receipt_option, receipt_email, version) "
        "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17) "
        "ON CONFLICT(guid) DO UPDATE SET account_number = excluded.account_number, "
        "type = excluded.type, first_name = excluded.first_name, "
        "middle_name = excluded.middle_name, last_name = excluded.last_name, "
        "org_name = excluded.org_name, title = excluded.title, email = excluded.email, "
        "phone = excluded.phone, language = excluded.language, currency = excluded.currency, "
        "customer_group = excluded.customer_group, receipt_option = excluded.receipt_option, "
        "receipt_email = excluded.receipt_email, version = excluded.version"
      : "INSERT INTO customers(guid, guid_text, account_number, type, first_name, "
        "middle_name, last_name, org_name, title, email, phone, language, currency, "
        "customer_group, receipt_option, receipt_email, version) "
        "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)";
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare(sql));
  st.bind_blob(1, c.guid.raw()).bind(2, c.guid.to_string()).bind(3, c.account_number);
  st.bind(4, to_string(c.type));
  int col = 5;
  for (Field f : all_fields()) st.bind(col++, std::string_view(c.get(f)));
  st.bind(col, c.version);
  return st.run();
}

Status CustomerTable::insert_address(const Guid& customer, const Address& a) {
  // Appended after the customer's existing addresses.
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
      "INSERT INTO addresses(guid, customer, position, purpose, street, city, state, zip, country) "
      "VALUES(?1, ?2, (SELECT coalesce(max(position), -1) + 1 FROM addresses WHERE customer = ?2), "
      "?3, ?4, ?5, ?6, ?7, ?8)"));
  st.bind_blob(1, a.guid.raw()).bind_blob(2, customer.raw());
  st.bind(3, std::string_view(a.purpose)).bind(4, std::string_view(a.street));
  st.bind(5, std::string_view(a.city)).bind(6, std::string_view(a.state));
  st.bind(7, std::string_view(a.zip)).bind(8, std::string_view(a.country));
  return st.run();
}

Status CustomerTable::insert_contact(const Guid& customer, const Contact& k) {
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
      "INSERT INTO contacts(guid, customer, position, kind, value) VALUES(?1, ?2, "
      "(SELECT coalesce(max(position), -1) + 1 FROM contacts WHERE customer = ?2), ?3, ?4)"));
  st.bind_blob(1, k.guid.raw()).bind_blob(2, customer.raw());
  st.bind(3, to_string(k.kind)).bind(4, std::string_view(k.value));
  return st.run();
}

Status CustomerTable::insert_children(const Customer& c) {
  for (const Address& a : c.addresses) TS_RETURN_IF_ERROR(insert_address(c.guid, a));
  for (const Contact& k : c.contacts) TS_RETURN_IF_ERROR(insert_contact(c.guid, k));
  std::int64_t pos = 0;
  for (const std::string& name : c.affiliations) {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "INSERT OR IGNORE INTO affiliations(customer, position, name) VALUES(?1, ?2, ?3)"));
    st.bind_blob(1, c.guid.raw()).bind(2, pos++).bind(3, std::string_view(name));
    TS_RETURN_IF_ERROR(st.run());
  }
  for (const LoyaltyCard& l : c.loyalty_cards) {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "INSERT INTO loyalty_cards(card_number, customer, issued_at_ms) VALUES(?1, ?2, ?3)"));
    st.bind(1, std::string_view(l.card_number)).bind_blob(2, c.guid.raw()).bind(3, l.issued_at_ms);
    TS_RETURN_IF_ERROR(st.run());
  }
  return Status::Ok();
}

Status CustomerTable::remove_children(const Guid& customer) {
  for (const char* sql : {"DELETE FROM addresses WHERE customer = ?1",
                          "DELETE FROM contacts WHERE customer = ?1",
                          "DELETE FROM affiliations WHERE customer = ?1",
                          "DELETE FROM loyalty_cards WHERE customer = ?1"}) {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(sql));
    st.bind_blob(1, customer.raw());
    TS_RETURN_IF_ERROR(st.run());
  }
  return Status::Ok();
}

Status CustomerTable::insert(storage::Transaction& txn, const Customer& c) {
  if (!txn.active()) return Status::Internal("customer insert outside a transaction");
  TS_RETURN_IF_ERROR(write_row(c, /*replace=*/false));
  return insert_children(c);
}

Status CustomerTable::upsert(storage::Transaction& txn, const Customer& c) {
  if (!txn.active()) return Status::Internal("customer upsert outside a transaction");
  TS_RETURN_IF_ERROR(remove_children(c.guid));
  TS_RETURN_IF_ERROR(write_row(c, /*replace=*/true));
  return insert_children(c);
}

Result<std::int64_t> CustomerTable::upsert_from_hq(storage::Transaction& txn, const Customer& c) {
  if (!txn.active()) return Status::Internal("customer upsert outside a transaction");
  std::int64_t released = 0;
  if (c.account_number) {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "UPDATE customers SET account_number = NULL WHERE account_number = ?1 AND guid != ?2"));
    st.bind(1, *c.account_number).bind_blob(2, c.guid.raw());
    TS_RETURN_IF_ERROR(st.run());
    released += db_->changes();
  }
  for (const LoyaltyCard& l : c.loyalty_cards) {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "DELETE FROM loyalty_cards WHERE card_number = ?1 AND customer != ?2"));
    st.bind(1, std::string_view(l.card_number)).bind_blob(2, c.guid.raw());
    TS_RETURN_IF_ERROR(st.run());
    released += db_->changes();
  }
  // HQ keeps an address or contact GUID on one customer at a time. Another local
  // customer still holding one of `c`'s gives it up when HQ has converted it (it has an
  // account number: HQ merged it into `c`, an identity merge, or went back past one) or
  // when it is only a copy (no creation of it in this terminal's log: a customer from
  // HQ's feed, or one whose creation the log retention compacted and HQ lost since).
  // A customer created here and not converted yet keeps its own (the entry is then set
  // aside: a till elsewhere sent a clashing GUID).
  auto release_sql = [](std::string_view table) {
    const std::string owner = std::string(table) + ".customer";
    return "DELETE FROM " + std::string(table) + " WHERE guid = ?1 AND customer != ?2 AND (" + owner +
           " IN (SELECT guid FROM customers WHERE account_number IS NOT NULL) OR NOT EXISTS "
           "(SELECT 1 FROM change_log l WHERE l.entity = " + owner + " AND l.kind = ?3))";
  };
  const std::string by_address = release_sql("addresses"), by_contact = release_sql("contacts");
  for (const bool addresses : {true, false}) {
    const std::string& sql = addresses ? by_address : by_contact;
    const std::size_t n = addresses ? c.addresses.size() : c.contacts.size();
    for (std::size_t i = 0; i < n; ++i) {
      TS_ASSIGN_OR_RETURN(auto st, db_->prepare(sql));
      st.bind_blob(1, (addresses ? c.addresses[i].guid : c.contacts[i].guid).raw()).bind_blob(2, c.guid.raw());
      st.bind(3, static_cast<std::int64_t>(OpKind::customer_create));
      TS_RETURN_IF_ERROR(st.run());
      released += db_->changes();
    }
  }
  TS_RETURN_IF_ERROR(upsert(txn, c));
  return released;
}

Status CustomerTable::remove(storage::Transaction& txn, const Guid& customer) {
  if (!txn.active()) return Status::Internal("customer delete outside a transaction");
  TS_RETURN_IF_ERROR(remove_children(customer));
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare("DELETE FROM customers WHERE guid = ?1"));
  st.bind_blob(1, customer.raw());
  return st.run();
}

Status CustomerTable::update_scalars(storage::Transaction& txn, const Customer& c) {
  if (!txn.active()) return Status::Internal("customer update outside a transaction");
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
      "UPDATE customers SET account_number=?2, type=?3, first_name=?4, middle_name=?5, "
      "last_name=?6, org_name=?7, title=?8, email=?9, phone=?10, language=?11, currency=?12, "
      "customer_group=?13, receipt_option=?14, receipt_email=?15, version=?16 WHERE guid=?1"));
  st.bind_blob(1, c.guid.raw()).bind(2, c.account_number).bind(3, to_string(c.type));
  int col = 4;
  for (Field f : all_fields()) st.bind(col++, std::string_view(c.get(f)));
  st.bind(col, c.version);
  return st.run();
}

Status CustomerTable::add_address(storage::Transaction& txn, const Guid& customer, const Address& a) {
  if (!txn.active()) return Status::Internal("address insert outside a transaction");
  return insert_address(customer, a);
}

Status CustomerTable::load_children(Customer& c) {
  {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "SELECT guid, purpose, street, city, state, zip, country FROM addresses "
        "WHERE customer = ?1 ORDER BY position"));
    st.bind_blob(1, c.guid.raw());
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      Address a;
      a.guid = Guid::from_raw(st.column_blob(0)).value_or(Guid{});
      a.purpose = st.column_text(1);
      a.street = st.column_text(2);
      a.city = st.column_text(3);
      a.state = st.column_text(4);
      a.zip = st.column_text(5);
      a.country = st.column_text(6);
      c.addresses.push_back(std::move(a));
    }
  }
  {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "SELECT guid, kind, value FROM contacts WHERE customer = ?1 ORDER BY position"));
    st.bind_blob(1, c.guid.raw());
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      Contact k;
      k.guid = Guid::from_raw(st.column_blob(0)).value_or(Guid{});
      k.kind = st.column_text(1) == "phone" ? ContactKind::phone : ContactKind::email;
      k.value = st.column_text(2);
      c.contacts.push_back(std::move(k));
    }
  }
  {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "SELECT name FROM affiliations WHERE customer = ?1 ORDER BY position"));
    st.bind_blob(1, c.guid.raw());
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      c.affiliations.push_back(st.column_text(0));
    }
  }
  {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "SELECT card_number, issued_at_ms FROM loyalty_cards WHERE customer = ?1 "
        "ORDER BY issued_at_ms, card_number"));
    st.bind_blob(1, c.guid.raw());
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      c.loyalty_cards.push_back({st.column_text(0), st.column_int64(1)});
    }
  }
  return Status::Ok();
}

Result<std::vector<Customer>> CustomerTable::load_rows(storage::Statement& st) {
  std::vector<Customer> out;
  for (;;) {
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    out.push_back(read_row(st));
  }
  for (Customer& c : out) TS_RETURN_IF_ERROR(load_children(c));
  return out;
}

Result<std::optional<Customer>> CustomerTable::get(const Guid& guid) {
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare(select_sql("WHERE guid = ?1")));
  st.bind_blob(1, guid.raw());
  TS_ASSIGN_OR_RETURN(auto rows, load_rows(st));
  if (rows.empty()) return std::optional<Customer>{};
  return std::optional<Customer>{std::move(rows.front())};
}

Result<std::optional<Customer>> CustomerTable::by_account(std::string_view account_number) {
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare(select_sql("WHERE account_number = ?1")));
  st.bind(1, account_number);
  TS_ASSIGN_OR_RETURN(auto rows, load_rows(st));
  if (rows.empty()) return std::optional<Customer>{};
  return std::optional<Customer>{std::move(rows.front())};
}

Result<std::vector<Customer>> CustomerTable::search(std::string_view text, std::size_t limit,
                                                   std::string_view scope, std::string_view scope_value) {
  // LIKE is case-insensitive for ASCII; GUID text is stored lower-case. LIMIT -1 is none.
  std::string where =
      "WHERE (?1 = '' OR first_name LIKE ?2 ESCAPE '\\' OR middle_name LIKE ?2 ESCAPE '\\' "
      "OR last_name LIKE ?2 ESCAPE '\\' OR org_name LIKE ?2 ESCAPE '\\' "
      "OR email LIKE ?2 ESCAPE '\\' OR phone LIKE ?2 ESCAPE '\\' "
      "OR account_number LIKE ?2 ESCAPE '\\' OR guid_text LIKE ?2 ESCAPE '\\') ";
  if (!scope.empty()) where += "AND " + std::string(scope) + " ";
  where +=
      "ORDER BY CASE type WHEN 'organization' THEN org_name ELSE last_name END COLLATE NOCASE, "
      "first_name COLLATE NOCASE, guid LIMIT ?3";
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare(select_sql(where)));
  st.bind(1, text).bind(2, like_pattern(text)).bind(3, limit > 0 ? static_cast<std::int64_t>(limit) : std::int64_t{-1});
  if (!scope.empty()) st.bind(4, scope_value);
  return load_rows(st);
}

Result<std::vector<Customer>> CustomerTable::all_by_guid() {
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare(select_sql("ORDER BY guid")));
  return load_rows(st);
}

Status CustomerTable::for_each_by_guid(const std::function<Status(const Customer&)>& fn) {
  constexpr std::int64_t kPage = 1000;
  std::optional<Guid> after;
  for (;;) {
    // Two statements, so each page is a range scan of the primary key.
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(select_sql(after ? "WHERE guid > ?2 ORDER BY guid LIMIT ?1"
                                                               : "ORDER BY guid LIMIT ?1")));
    st.bind(1, kPage);
    if (after) st.bind_blob(2, after->raw());
    TS_ASSIGN_OR_RETURN(auto page, load_rows(st));
    for (const Customer& c : page) TS_RETURN_IF_ERROR(fn(c));
    if (static_cast<std::int64_t>(page.size()) < kPage) return Status::Ok();
    after = page.back().guid;
  }
}

Result<std::int64_t> CustomerTable::count() {
  TS_ASSIGN_OR_RETURN(auto n, db_->query_int("SELECT count(*) FROM customers"));
  return n.value_or(0);
}

}  // namespace tillsync
