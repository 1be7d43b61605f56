//! The `blackhole` sink's conformance fixture (written by the conformance suite's author;
//! `None` until then, which the guard test reports).

use crate::api::fixture::SinkFixture;

/// The `blackhole` sink's fixture.
pub(crate) fn sink() -> Option<Box<dyn SinkFixture>> {
    None
}
