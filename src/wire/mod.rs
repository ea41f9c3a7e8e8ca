//! Typed views over untrusted bytes.
//!
//! Every parser here checks lengths and fixed fields up front and then hands
//! out accessors that cannot fail, so code further in never re-checks and
//! never panics on hostile input. Nothing here allocates.

pub mod wg;
