// Micro-benchmarks of the hot paths (issue 7 item 1): change-log append, payload
// encode/decode, HLC tick, validation, content digest and frame encode/decode.
// Never timed assertions: run by hand (or by the `micro_bench_smoke` ctest entry, which
// only checks that every benchmark runs). Durable log appends go to the temp directory's
// disk, so their figures are those of that disk's fsync.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "support/temp_dir.h"
#include "tillsync/clock.h"
#include "tillsync/digest.h"
#include "tillsync/domain.h"
#include "tillsync/guid.h"
#include "tillsync/operations.h"
#include "tillsync/status.h"
#include "tillsync/storage/change_log.h"
#include "tillsync/storage/database.h"
#include "tillsync/storage/schema.h"
#include "tillsync/transport/frame.h"
#include "tillsync/validation.h"

namespace tillsync {
namespace {

constexpr std::int64_t kBaseMs = 1'700'000'000'000;

// A benchmark cannot continue after a failed setup call: report it and stop the run.
template <typename T>
T must(Result<T> r, const char* what) {
  if (!r.ok()) throw std::runtime_error(std::string(what) + ": " + r.status().to_string());
  return std::move(r).value();
}
void must(const Status& s, const char* what) {
  if (!s.ok()) throw std::runtime_error(std::string(what) + ": " + s.to_string());
}

// The person `tillsync bench` creates, with the default-customer values copied in.
Customer person(GuidGenerator& guids, std::size_t i) {
  Customer c;
  c.guid = guids.next_time_ordered(kBaseMs + static_cast<std::int64_t>(i));
  c.type = CustomerType::person;
  c.first_name = "Bench1";
  c.last_name = "Customer" + std::to_string(i);
  c.email = "bench1." + std::to_string(i) + "@example.com";
  c.phone = "+1555" + std::to_string(1'100'000 + i);
  c.language = "en-us";
  c.currency = "USD";
  c.customer_group = "RETAIL";
  c.receipt_option = "print";
  return c;
}

// A fuller customer: an address, a secondary e-mail and an affiliation.
Customer full_person(GuidGenerator& guids, std::size_t i) {
  Customer c = person(guids, i);
  c.title = "Dr.";
  Address a;
  a.guid = guids.next_time_ordered(kBaseMs);
  a.purpose = "home";
  a.street = "1 Main Street";
  a.city = "Springfield";
  a.state = "IL";
  a.zip = "62701";
  a.country = "US";
  c.addresses.push_back(a);
  Contact k;
  k.guid = guids.next_time_ordered(kBaseMs);
  k.kind = ContactKind::email;
  k.value = "second." + std::to_string(i) + "@example.org";
  c.contacts.push_back(k);
  c.affiliations.push_back("Employees");
  return c;
}

Payload create_payload() {
  GuidGenerator guids(1);
  return CustomerCreated{person(guids, 12'345)};
}

Payload edit_payload() {
  GuidGenerator guids(2);
  CustomerUpdated u;
  u.customer = guids.next_time_ordered(kBaseMs);
  u.base_version = 3;
  u.changes.push_back({Field::phone, "+15550001234"});
  return u;
}

// ---- change log append ------------------------------------------------------------

constexpr storage::Migration kLogMigrations[] = {{1, "change log", storage::ChangeLog::kSchema}};
constexpr storage::SchemaSpec kLogSpec{0x54534c42, "micro-bench change log", kLogMigrations};

// Args: durable (0: synchronous=NORMAL, 1: FULL), rows per transaction.
void BM_LogAppend(benchmark::State& state) {
  const bool durable = state.range(0) != 0;
  const auto per_txn = static_cast<std::size_t>(state.range(1));
  testing::TempDir dir;
  storage::DatabaseOptions options;
  options.create_if_missing = true;
  options.synchronous = durable ? storage::Synchronous::full : storage::Synchronous::normal;
  auto db = must(storage::Database::open(dir.file("log.db"), options), "open");
  must(storage::migrate(*db, kLogSpec), "migrate");
  storage::ChangeLog log(*db);

  GuidGenerator guids(3);
  storage::LogRow row;
  row.kind = static_cast<int>(OpKind::customer_create);
  row.node_id = "S001/T01";
  row.payload = encode_payload(create_payload());
  std::int64_t n = 0;
  for (auto _ : state) {
    auto txn = must(storage::Transaction::begin(*db), "begin");
    for (std::size_t i = 0; i < per_txn; ++i) {
      ++n;
      row.op_id = std::string(guids.next_time_ordered(kBaseMs + n).raw());
      row.entity = row.op_id;
      row.hlc = static_cast<std::uint64_t>(kBaseMs + n) << 16;
      auto seq = must(log.append(txn, row), "append");
      benchmark::DoNotOptimize(seq);
    }
    must(txn.commit(), "commit");
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(per_txn));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(per_txn) *
                          static_cast<std::int64_t>(row.payload.size()));
}
BENCHMARK(BM_LogAppend)
    ->ArgNames({"durable", "rows_per_txn"})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({0, 500})
    ->Args({1, 500})
    ->Unit(benchmark::kMicrosecond);

// ---- payload encode/decode ----------------------------------------------------------

void encode_bench(benchmark::State& state, const Payload& p) {
  std::size_t bytes = 0;
  for (auto _ : state) {
    std::string out = encode_payload(p);
    bytes = out.size();
    benchmark::DoNotOptimize(out);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
  state.counters["payload_bytes"] = static_cast<double>(bytes);
}

void decode_bench(benchmark::State& state, const Payload& p) {
  const std::string bytes = encode_payload(p);
  const OpKind kind = kind_of(p);
  for (auto _ : state) {
    auto decoded = decode_payload(kind, bytes);
    if (!decoded.ok()) {
      state.SkipWithError(decoded.status().to_string().c_str());
      break;
    }
    benchmark::DoNotOptimize(decoded);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes.size()));
  state.counters["payload_bytes"] = static_cast<double>(bytes.size());
}

void BM_EncodeCreate(benchmark::State& state) { encode_bench(state, create_payload()); }
void BM_DecodeCreate(benchmark::State& state) { decode_bench(state, create_payload()); }
void BM_EncodeEdit(benchmark::State& state) { encode_bench(state, edit_payload()); }
void BM_DecodeEdit(benchmark::State& state) { decode_bench(state, edit_payload()); }
BENCHMARK(BM_EncodeCreate);
BENCHMARK(BM_DecodeCreate);
BENCHMARK(BM_EncodeEdit);
BENCHMARK(BM_DecodeEdit);

// ---- HLC ----------------------------------------------------------------------------

// A local event with the wall clock standing still (counter ticks; the 16-bit counter
// borrows the next millisecond when exhausted).
void BM_HlcTickManualClock(benchmark::State& state) {
  ManualClock wall(kBaseMs);
  HybridLogicalClock hlc(wall);
  for (auto _ : state) {
    Hlc h = hlc.now();
    benchmark::DoNotOptimize(h);
  }
}
BENCHMARK(BM_HlcTickManualClock);

// The same with the real system clock (what a terminal pays per operation).
void BM_HlcTickSystemClock(benchmark::State& state) {
  HybridLogicalClock hlc(SystemClock::instance());
  for (auto _ : state) {
    Hlc h = hlc.now();
    benchmark::DoNotOptimize(h);
  }
}
BENCHMARK(BM_HlcTickSystemClock);

// Merging a remote timestamp that is ahead of the local clock.
void BM_HlcUpdateRemote(benchmark::State& state) {
  ManualClock wall(kBaseMs);
  HybridLogicalClock hlc(wall);
  Hlc remote = Hlc::make(static_cast<std::uint64_t>(kBaseMs), 0);
  for (auto _ : state) {
    remote = Hlc{remote.value + 2};
    Hlc h = hlc.update(remote);
    benchmark::DoNotOptimize(h);
  }
}
BENCHMARK(BM_HlcUpdateRemote);

// ---- validation ---------------------------------------------------------------------

void validate_bench(benchmark::State& state, const Customer& c) {
  for (auto _ : state) {
    Status s = validate_customer(c);
    if (!s.ok()) {
      state.SkipWithError(s.to_string().c_str());
      break;
    }
    benchmark::DoNotOptimize(s);
  }
}
void BM_ValidateCustomer(benchmark::State& state) {
  GuidGenerator guids(4);
  validate_bench(state, person(guids, 42));
}
void BM_ValidateCustomerWithChildren(benchmark::State& state) {
  GuidGenerator guids(5);
  validate_bench(state, full_person(guids, 42));
}
BENCHMARK(BM_ValidateCustomer);
BENCHMARK(BM_ValidateCustomerWithChildren);

// ---- digest -------------------------------------------------------------------------

// Digest of N customers already in GUID order (as read from a database index).
void BM_Digest(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  GuidGenerator guids(6);
  std::vector<Customer> customers;
  customers.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    customers.push_back(i % 4 == 0 ? full_person(guids, i) : person(guids, i));
  }
  std::sort(customers.begin(), customers.end(),
            [](const Customer& a, const Customer& b) { return a.guid < b.guid; });
  for (auto _ : state) {
    DigestBuilder builder;
    for (const Customer& c : customers) builder.add(c);
    ContentDigest d = builder.finish();
    benchmark::DoNotOptimize(d);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
}
BENCHMARK(BM_Digest)->ArgName("customers")->Arg(100)->Arg(10'000)->Unit(benchmark::kMicrosecond);

// ---- frames -------------------------------------------------------------------------

// Body sizes: one operation record, and a push batch of 500 of them.
void BM_FrameEncode(benchmark::State& state) {
  const std::string body(static_cast<std::size_t>(state.range(0)), 'x');
  std::uint64_t id = 0;
  for (auto _ : state) {
    std::string frame = transport::encode_frame(3, ++id, body);
    benchmark::DoNotOptimize(frame);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() *
                          static_cast<std::int64_t>(body.size() + transport::kFrameHeaderSize));
}
void BM_FrameDecode(benchmark::State& state) {
  const std::string frame =
      transport::encode_frame(3, 77, std::string(static_cast<std::size_t>(state.range(0)), 'x'));
  for (auto _ : state) {
    auto decoded = transport::decode_frame(frame);
    if (!decoded.ok()) {
      state.SkipWithError(decoded.status().to_string().c_str());
      break;
    }
    benchmark::DoNotOptimize(decoded);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(frame.size()));
}
BENCHMARK(BM_FrameEncode)->ArgName("body_bytes")->Arg(280)->Arg(140'000);
BENCHMARK(BM_FrameDecode)->ArgName("body_bytes")->Arg(280)->Arg(140'000);

}  // namespace
}  // namespace tillsync

BENCHMARK_MAIN();
