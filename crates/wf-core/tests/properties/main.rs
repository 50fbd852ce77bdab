//! Properties of wf-core's edges, checked on generated inputs (proptest): the event
//! envelope's round trip through its wire form, both signature schemes against an
//! independent HMAC, and the URL policy against every spelling of a forbidden address.
//! A failing case is shrunk and printed; proptest keeps its seed under
//! `tests/proptest-regressions/` (committed) so it is replayed first on every later run,
//! and `regressions` pins what was found as plain examples.

mod envelope;
mod regressions;
mod signing;
mod url_policy;
