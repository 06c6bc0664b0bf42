// Issue 18, item 6: identity merge. Two customers converted at HQ turn out to be one
// person; `hq merge-customers KEEP DROP` makes DROP a name of KEEP: journaled, learnt
// by every terminal from the feed, later operations on either GUID reach KEEP, and
// DROP's account number names KEEP at HQ and at the tills. HQ serves on a real
// loopback socket with its job parked; the pg-labelled copy runs the same tests
// against PostgreSQL.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "support/clocked_hq.h"

namespace tillsync {
namespace {

using testing::new_person;
using testing::Terminal;

class MergeTest : public testing::ClockedHqTest {
 protected:
  std::unique_ptr<Terminal> terminal(const std::string& store) { return terminal_with(store, async_config(store)); }
  Customer create(Terminal& t, NewCustomer n) {
    auto out = t.node().create_customer(n);
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    return out.ok() ? out->customer : Customer{};
  }
  Customer at_hq(const Guid& g) {
    auto all = hq->inspect()->customers("");
    EXPECT_TRUE(all.ok());
    if (all.ok())
      for (const Customer& c : *all)
        if (c.guid == g) return c;
    ADD_FAILURE() << "HQ lacks " << g.to_string();
    return {};
  }
  static Address address(const std::string& street) {
    Address a;
    a.purpose = "home";
    a.street = street;
    a.city = "Bern";
    a.country = "CH";
    return a;
  }
};

TEST_F(MergeTest, TheDroppedCustomerBecomesANameOfTheKeptOneEverywhere) {
  auto a = terminal("S001");
  auto b = terminal("S002");
  sync(*a);
  sync(*b);
  NewCustomer first = new_person("Ada", "Byron");
  first.email = "ada@example.org";
  first.addresses.push_back(address("Keepgasse 1"));
  NewCustomer second = new_person("Ada", "King");
  second.phone = "+41 31 555 01 01";
  second.addresses.push_back(address("Dropweg 2"));
  Customer keep = create(*a, first);
  Customer drop = create(*b, second);
  sync(*a);
  sync(*b);
  run_job();
  sync(*a);
  sync(*b);
  const std::string keep_account = *at_hq(keep.guid).account_number;
  const std::string drop_account = *at_hq(drop.guid).account_number;
  // An edit of the dropped customer that reaches HQ only after the merge.
  ASSERT_TRUE(b->node().edit_customer(drop.guid.to_string(), {{Field::title, "Countess"}}).ok());

  auto merged = hq->inspect()->merge_customers(keep_account, drop_account);
  ASSERT_TRUE(merged.ok()) << merged.status().to_string();
  EXPECT_EQ(merged->kept.guid, keep.guid);
  EXPECT_EQ(merged->kept.last_name, "Byron");               // KEEP's values stay
  EXPECT_EQ(merged->kept.phone, "+41 31 555 01 01");        // its empty ones are filled
  EXPECT_EQ(merged->kept.addresses.size(), 2u);             // DROP's children come along
  EXPECT_EQ(merged->dropped_account, drop_account);
  auto journal = hq->inspect()->merges();
  ASSERT_TRUE(journal.ok());
  ASSERT_EQ(journal->size(), 1u);
  EXPECT_EQ(journal->front().kept, keep.guid);
  EXPECT_EQ(journal->front().dropped, drop.guid);
  EXPECT_EQ(journal->front().dropped_account, drop_account);

  // DROP's account number names KEEP at HQ: a back-office edit through it.
  auto edited = hq->inspect()->edit_customer(drop_account, {{Field::middle_name, "Augusta"}});
  ASSERT_TRUE(edited.ok()) << edited.status().to_string();
  EXPECT_EQ(edited->guid, keep.guid);

  sync(*b);  // pushes the late edit of DROP, pulls the merge
  run_job();
  sync(*a);
  sync(*b);
  // A terminal installed after the merge never held DROP.
  auto c = terminal("S003");
  sync(*c);
  const Customer now = at_hq(keep.guid);
  EXPECT_EQ(now.title, "Countess") << "the late edit of the dropped GUID did not reach the kept customer";
  EXPECT_EQ(now.middle_name, "Augusta");
  for (auto* t : {a.get(), b.get(), c.get()}) {
    auto via_drop = t->node().find(drop.guid.to_string());
    ASSERT_TRUE(via_drop.ok()) << t->node().node_id() << ": " << via_drop.status().to_string();
    EXPECT_EQ(via_drop->guid, keep.guid) << t->node().node_id();
    EXPECT_EQ(via_drop->title, "Countess") << t->node().node_id();
    // DROP's account number (on the customer's old card) names KEEP at the till too.
    auto via_account = t->node().find(drop_account);
    ASSERT_TRUE(via_account.ok()) << t->node().node_id() << ": " << via_account.status().to_string();
    EXPECT_EQ(via_account->guid, keep.guid) << t->node().node_id();
    EXPECT_EQ(via_account->account_number, keep_account) << t->node().node_id();
    EXPECT_EQ(t->node().search("")->size(), 1u) << t->node().node_id() << " still lists the dropped customer";
    EXPECT_EQ(t->node().digest()->hex, hq->inspect()->digest()->hex) << t->node().node_id();
  }
  // Later operations on either GUID, from a terminal, reach KEEP.
  ASSERT_TRUE(a->node().edit_customer(drop.guid.to_string(), {{Field::customer_group, "VIP"}}).ok());
  sync(*a);
  run_job();
  sync(*b);
  EXPECT_EQ(at_hq(keep.guid).customer_group, "VIP");
  EXPECT_EQ(b->node().find(keep.guid.to_string())->customer_group, "VIP");
  // The status view says where DROP went.
  bool said = false;
  auto statuses = hq->inspect()->sync_status(std::nullopt);
  ASSERT_TRUE(statuses.ok());
  for (const SyncStatusRecord& r : *statuses) {
    if (r.guid != drop.guid) continue;
    said = r.status == SyncStatus::duplicate && r.twin == keep.guid;
  }
  EXPECT_TRUE(said);
  // Erasing through the dropped account number erases the one person, both GUIDs.
  auto erased = hq->inspect()->erase_customer(drop_account);
  ASSERT_TRUE(erased.ok()) << erased.status().to_string();
  EXPECT_EQ(erased->customer, keep.guid);
  EXPECT_EQ(erased->aliases, std::vector<Guid>{drop.guid});
  EXPECT_TRUE(hq->inspect()->merges()->empty());
}

TEST_F(MergeTest, MergingACustomerIntoItselfOrIntoNobodyIsRefused) {
  auto a = terminal("S001");
  Customer c = create(*a, new_person("Solo", "Person"));
  sync(*a);
  run_job();
  const std::string account = *at_hq(c.guid).account_number;
  EXPECT_EQ(hq->inspect()->merge_customers(account, c.guid.to_string()).status().code(), Code::invalid_input);
  EXPECT_EQ(hq->inspect()->merge_customers(account, "C999999999").status().code(), Code::not_found);
  EXPECT_TRUE(hq->inspect()->merges()->empty());
}

}  // namespace
}  // namespace tillsync
