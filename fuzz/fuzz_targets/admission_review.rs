//! Raw bytes → the webhook's request path (`Webhook::review`: AdmissionReview parsing, the
//! namespace cache, the policy decision, the response), in enforce and warn mode. Never a panic,
//! always a well-formed AdmissionReview answer, and never an admission that breaks the
//! properties in `byoc_fuzz` (unparsable or unallowed image in enforce mode, byoc label change
//! by a tenant, unknown kind, uid not echoed).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    byoc_fuzz::harness().check(body);
});
