// Error values that cross module boundaries.
//
// Every fallible call in tillsync returns a Status or a Result<T>. A Status carries a
// stable code (its string form is part of the CLI and wire contract and never changes
// meaning), a readable message, and for validation errors the field it is about.
// Both types are plain values: copyable, cheap when OK, safe to use from any thread.
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace tillsync {

// Stable error codes. Append only; the names returned by code_name() are the contract.
enum class Code : int {
  ok = 0,
  invalid_input,
  not_found,
  offline_creation_blocked,
  pending_customer_not_editable,
  loyalty_requires_synced_customer,
  feature_disabled,
  hq_unreachable,
  conflict,
  unauthorized,
  corrupt_log,
  unsupported_version,
  not_a_tillsync_database,
  internal,
  // A transient storage failure the caller may retry as a whole: a server database
  // (PostgreSQL) aborted the transaction to serialize it with another HQ process
  // (serialization failure, deadlock). Never a domain outcome.
  busy,
  // Storage refused a write that would break one of its integrity rules (a unique GUID
  // or number already held, a reference to a missing row): the data is at fault, not
  // the storage; the same write fails again.
  constraint_violation,
  // A request reached HQ's side of the link but no answer came back in time: HQ may
  // or may not have carried it out. Reconciled by its GUID at the next contact.
  outcome_unknown,
  // A bound of D13 or of HQ's quotas: too many addresses, contacts, affiliations or
  // loyalty cards on one customer. The same request fails again.
  limit_exceeded,
  // The customer was erased (right to erasure, `hq erase-customer`): nothing is ever
  // written for its GUID again.
  erased,
};

constexpr std::string_view code_name(Code c) noexcept {
  switch (c) {
    case Code::ok: return "ok";
    case Code::invalid_input: return "invalid_input";
    case Code::not_found: return "not_found";
    case Code::offline_creation_blocked: return "offline_creation_blocked";
    case Code::pending_customer_not_editable: return "pending_customer_not_editable";
    case Code::loyalty_requires_synced_customer: return "loyalty_requires_synced_customer";
    case Code::feature_disabled: return "feature_disabled";
    case Code::hq_unreachable: return "hq_unreachable";
    case Code::conflict: return "conflict";
    case Code::unauthorized: return "unauthorized";
    case Code::corrupt_log: return "corrupt_log";
    case Code::unsupported_version: return "unsupported_version";
    case Code::not_a_tillsync_database: return "not_a_tillsync_database";
    case Code::internal: return "internal";
    case Code::busy: return "busy";
    case Code::constraint_violation: return "constraint_violation";
    case Code::outcome_unknown: return "outcome_unknown";
    case Code::limit_exceeded: return "limit_exceeded";
    case Code::erased: return "erased";
  }
  return "internal";
}

// The Code whose code_name() is `name`; nullopt for unknown names.
constexpr std::optional<Code> parse_code(std::string_view name) noexcept {
  for (int i = 0; i <= static_cast<int>(Code::erased); ++i) {
    if (code_name(static_cast<Code>(i)) == name) return static_cast<Code>(i);
  }
  return std::nullopt;
}

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(Code code, std::string message, std::string field = {})
      : code_(code), message_(std::move(message)), field_(std::move(field)) {}

  static Status Ok() { return {}; }
  static Status InvalidInput(std::string field, std::string message) {
    return {Code::invalid_input, std::move(message), std::move(field)};
  }
  static Status NotFound(std::string message) { return {Code::not_found, std::move(message)}; }
  static Status HqUnreachable(std::string message) {
    return {Code::hq_unreachable, std::move(message)};
  }
  static Status FeatureDisabled(std::string field, std::string message) {
    return {Code::feature_disabled, std::move(message), std::move(field)};
  }
  static Status CorruptLog(std::string message) { return {Code::corrupt_log, std::move(message)}; }
  static Status UnsupportedVersion(std::string message) {
    return {Code::unsupported_version, std::move(message)};
  }
  static Status Internal(std::string message) { return {Code::internal, std::move(message)}; }
  // `busy` with a hint of when to try again: the message ends "(retry after N ms)", so
  // the hint survives the wire (error replies carry code and message).
  static Status Busy(std::string message, std::int64_t retry_after_ms) {
    return {Code::busy, std::move(message) + " (retry after " + std::to_string(retry_after_ms) + " ms)"};
  }
  // The hint of a `busy` status made by Busy(); nullopt for any other status.
  std::optional<std::int64_t> retry_after_ms() const {
    constexpr std::string_view kHead = "(retry after ", kTail = " ms)";
    if (code_ != Code::busy || message_.size() < kTail.size() ||
        message_.compare(message_.size() - kTail.size(), kTail.size(), kTail) != 0)
      return std::nullopt;
    const std::size_t head = message_.rfind(kHead);
    if (head == std::string::npos) return std::nullopt;
    const std::size_t from = head + kHead.size(), to = message_.size() - kTail.size();
    if (from >= to || to - from > 9) return std::nullopt;
    std::int64_t ms = 0;
    for (std::size_t i = from; i < to; ++i) {
      if (message_[i] < '0' || message_[i] > '9') return std::nullopt;
      ms = ms * 10 + (message_[i] - '0');
    }
    return ms;
  }

  bool ok() const noexcept { return code_ == Code::ok; }
  explicit operator bool() const noexcept { return ok(); }
  Code code() const noexcept { return code_; }
  std::string_view code_name() const noexcept { return tillsync::code_name(code_); }
  const std::string& message() const noexcept { return message_; }
  // The input field a validation error is about; empty when not field-specific.
  const std::string& field() const noexcept { return field_; }

  // "code: message" for logs and one-line CLI errors.
  std::string to_string() const {
    if (ok()) return "ok";
    return std::string(code_name()) + ": " + message_;
  }

 private:
  Code code_ = Code::ok;
  std::string message_;
  std::string field_;
};

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok() && "Result constructed from an OK status");
  }

  bool ok() const noexcept { return std::holds_alternative<T>(v_); }
  explicit operator bool() const noexcept { return ok(); }

  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  // By value, so `for (auto& x : f().value())` does not dangle.
  T value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace tillsync

// Propagate a non-OK Status from an expression returning Status.
#define TS_RETURN_IF_ERROR(expr)                     \
  do {                                               \
    ::tillsync::Status ts_status_ = (expr);          \
    if (!ts_status_.ok()) return ts_status_;         \
  } while (0)

#define TS_CONCAT_INNER(a, b) a##b
#define TS_CONCAT(a, b) TS_CONCAT_INNER(a, b)
// Evaluate an expression returning Result<T>; on error return its Status, else move the
// value into `lhs` (a declaration such as `auto x`).
#define TS_ASSIGN_OR_RETURN(lhs, expr) \
  TS_ASSIGN_OR_RETURN_IMPL(TS_CONCAT(ts_result_, __LINE__), lhs, expr)
#define TS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
