// storage/pg.h against a real server (label pg): error codes, the pipeline's error
// reporting, binary arrays. Temporary tables only, so tests share the server freely.
#include <gtest/gtest.h>

#include "support/hq_backend.h"
#include "tillsync/storage/pg.h"

namespace tillsync::storage {
namespace {

class PgConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!tillsync::testing::testing_postgres()) GTEST_SKIP() << "runs only as the pg variant";
    auto c = PgConnection::open(tillsync::testing::pg_server_url());
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    db = std::move(c).value();
  }
  std::unique_ptr<PgConnection> db;
};

TEST_F(PgConnectionTest, SerializationFailuresAndDeadlocksAreBusyConstraintsTheirOwnOtherErrorsInternal) {
  auto raise = [&](const char* sqlstate) {
    return db->exec(std::string("DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '") + sqlstate + "'; END $$");
  };
  EXPECT_EQ(raise("40001").code(), Code::busy);
  EXPECT_EQ(raise("40P01").code(), Code::busy);
  Status unique = raise("23505");
  EXPECT_EQ(unique.code(), Code::constraint_violation);
  EXPECT_NE(unique.message().find("23505"), std::string::npos) << unique.message();
  auto r = db->run("SELECT no_such_column FROM pg_class");
  EXPECT_EQ(r.status().code(), Code::internal);
  // The connection is still usable.
  EXPECT_EQ(db->query_i64("SELECT 7::bigint").value(), std::optional<std::int64_t>{7});
}

TEST_F(PgConnectionTest, AQueuedFailureComesBackFromTheNextReadAndCommitRollsBack) {
  ASSERT_TRUE(db->exec("CREATE TEMP TABLE t (k bigint PRIMARY KEY)").ok());
  ASSERT_TRUE(db->exec("BEGIN").ok());
  ASSERT_TRUE(db->queue("INSERT INTO t VALUES($1)", PgParams().i64(1)).ok());
  ASSERT_TRUE(db->queue("INSERT INTO t VALUES($1)", PgParams().i64(1)).ok());  // duplicate key
  ASSERT_TRUE(db->queue("INSERT INTO t VALUES($1)", PgParams().i64(2)).ok());  // aborted
  auto read = db->run("SELECT count(*)::bigint FROM t");
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), Code::constraint_violation);
  EXPECT_NE(read.status().message().find("23505"), std::string::npos) << read.status().message();
  EXPECT_FALSE(db->commit().ok());  // rolled back, not committed
  EXPECT_EQ(db->query_i64("SELECT count(*)::bigint FROM t").value(), std::optional<std::int64_t>{0});

  // Queued writes that succeed are committed, and a read after them sees them.
  ASSERT_TRUE(db->exec("BEGIN").ok());
  for (std::int64_t k = 1; k <= 3; ++k) ASSERT_TRUE(db->queue("INSERT INTO t VALUES($1)", PgParams().i64(k)).ok());
  EXPECT_EQ(db->query_i64("SELECT count(*)::bigint FROM t").value(), std::optional<std::int64_t>{3});
  ASSERT_TRUE(db->queue("INSERT INTO t VALUES($1)", PgParams().i64(4)).ok());
  ASSERT_TRUE(db->commit().ok());
  EXPECT_EQ(db->query_i64("SELECT count(*)::bigint FROM t").value(), std::optional<std::int64_t>{4});
}

TEST_F(PgConnectionTest, BinaryArraysAndValuesRoundTrip) {
  const std::vector<std::int64_t> ints{1, -2, std::int64_t{1} << 40, INT64_MIN};
  auto r = db->run("SELECT v FROM unnest($1::bigint[]) WITH ORDINALITY AS t(v, i) ORDER BY i",
                   PgParams().i64_array(ints));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r->i64(i, 0), ints[static_cast<std::size_t>(i)]);

  const std::vector<std::string> blobs{std::string("a\0b", 3), "", std::string(300, '\xff')};
  auto b = db->run("SELECT v FROM unnest($1::bytea[]) WITH ORDINALITY AS t(v, i) ORDER BY i",
                   PgParams().bytes_array(blobs));
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  ASSERT_EQ(b->size(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b->bytes(i, 0), blobs[static_cast<std::size_t>(i)]);

  auto empty = db->run("SELECT count(*)::bigint FROM unnest($1::text[])", PgParams().text_array({}));
  ASSERT_TRUE(empty.ok()) << empty.status().to_string();
  EXPECT_EQ(empty->i64(0, 0), 0);

  auto n = db->run("SELECT $1::text IS NULL, $2::text", PgParams().opt_text(std::nullopt).text("O'Brien; --"));
  ASSERT_TRUE(n.ok()) << n.status().to_string();
  EXPECT_EQ(n->text(0, 1), "O'Brien; --");
}

TEST(PgConnectionUrl, APasswordNeverReachesMessages) {
  // Nothing listens on loopback port 1: refused at once.
  auto c = PgConnection::open("postgresql://till:hunter2@127.0.0.1:1/hq");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::internal);
  EXPECT_EQ(c.status().message().find("hunter2"), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find("postgresql://till@127.0.0.1:1/hq"), std::string::npos)
      << c.status().message();
  EXPECT_TRUE(is_postgres_url("postgres://x"));
  // Every form a password can take.
  EXPECT_EQ(redact_postgres_url("postgresql://till:p@ss:w0rd@db.example:5432/hq?sslmode=require"),
            "postgresql://till@db.example:5432/hq?sslmode=require");
  EXPECT_EQ(redact_postgres_url("postgresql://:hunter2@db/hq"), "postgresql://@db/hq");
  EXPECT_EQ(redact_postgres_url("postgresql://till@db/hq?password=hunter2&sslmode=require&SSLPassword=x"),
            "postgresql://till@db/hq?password=***&sslmode=require&SSLPassword=***");
  EXPECT_EQ(redact_postgres_url("postgresql:///hq?host=/run/pg&user=till"), "postgresql:///hq?host=/run/pg&user=till");
  EXPECT_EQ(redact_postgres_url("host=db dbname=hq password='a b\\' c' user=till"),
            "host=db dbname=hq password=*** user=till");
  EXPECT_EQ(redact_postgres_url("/var/lib/tillsync/hq.db"), "/var/lib/tillsync/hq.db");
  EXPECT_TRUE(is_keyword_connection_string("host=db dbname=hq"));
  EXPECT_TRUE(is_keyword_connection_string("/tmp/x password=y"));
  EXPECT_FALSE(is_keyword_connection_string("/var/lib/tillsync/a=b.db"));
  EXPECT_FALSE(is_keyword_connection_string("postgresql://till@db/hq?password=x"));
  EXPECT_FALSE(is_postgres_url("/var/lib/tillsync/postgresql://hq.db"));
}

}  // namespace
}  // namespace tillsync::storage
