// Applying a logged operation to a customer value: the one definition shared by HQ's
// sync job and a terminal rebasing its unacknowledged edits on pulled HQ state.
#pragma once

#include <vector>

#include "tillsync/domain.h"
#include "tillsync/operations.h"
#include "tillsync/status.h"

namespace tillsync {

// Applies a non-create operation to `c` (whose GUID it must target), plus `extra` field
// changes, validates the result and, with `bump_version`, bumps the version when
// anything changed (HQ does; a terminal keeps the HQ version it last saw).
// Idempotent for adds and removes (keyed by the child's GUID). A CustomerCreated
// payload is a no-op here. Errors are domain errors (invalid_input, ...): nothing
// about `c` is guaranteed then.
Status apply_to_customer(Customer& c, const Payload& p, const std::vector<FieldChange>& extra = {},
                         bool bump_version = true);

}  // namespace tillsync
